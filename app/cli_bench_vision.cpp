// `lumen-cli bench --vision`: the vision encoder and projector's latency for given tile counts,
// next to the tensor-core floor, and the time to first token with one image file (decoding,
// preprocessing, encoding, prefill and the first decode step).
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <limits>
#include <random>

#include "app/cli_args.h"
#include "app/cli_commands.h"
#include "engine/backend/backend_factory.h"
#include "engine/util/error.h"
#include "engine/model/model.h"
#include "engine/runtime/scheduler.h"
#include "engine/util/text_file.h"
#include "vision/encoder.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace lumen::cli {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

// Multiply-adds x 2 of one encode: every token through the ViT's layers (attention included)
// and the projector.
double encode_flops(const vision::VisionConfig& v, int64_t tiles) {
    const double g = double(v.patches_per_side()), R = g * g + 1, D = double(v.hidden), I = double(v.intermediate);
    const double per_layer = R * (2 * D * 3 * D + 2 * D * D + 2 * 2 * D * I) + 2 * 2 * R * R * D;
    const double patches = g * g * 2 * D * double(v.channels * v.patch * v.patch);
    // LLaVA's projector reads each listed feature layer side by side; InternVL's, 2x2 patches.
    const double in = v.kind == ModelKind::Llava ? D * double(v.feature_layers.size()) : 4 * D;
    const double tokens = double(v.tokens_per_tile), H = double(v.text_hidden);
    const double projector = tokens * (2 * in * H + 2 * H * H);
    return double(tiles) * (patches + per_layer * double(v.layers_run()) + projector);
}

// A 1920x1080 test card (gradients and a grid, so every tile differs) as the PNG file a
// screenshot is saved as: its decoding is part of the time to first token.
std::vector<uint8_t> screenshot_png() {
    cv::Mat bgr(1080, 1920, CV_8UC3);
    for (int y = 0; y < bgr.rows; ++y)
        for (int x = 0; x < bgr.cols; ++x)
            bgr.at<cv::Vec3b>(y, x) = cv::Vec3b((x / 40 + y / 40) % 2 ? 230 : 30, uint8_t(y * 255 / 1079), uint8_t(x * 255 / 1919));
    std::vector<uint8_t> png;
    if (!cv::imencode(".png", bgr, png)) throw Error("could not make the test card's PNG");
    return png;
}

// One encoder: encode + projector for each tile count, and the time to first
// token with the screenshot, from its PNG and encoded ahead.
nlohmann::json bench_encoder(Backend& backend, Model& model, vision::VisionEncoder& encoder, const vision::VisionConfig& vc,
                             const std::vector<int>& tile_counts, double peak, int question, int32_t blocks, const std::vector<uint8_t>& png) {
    backend.synchronize();

    // Encoder + projector alone, for each tile count: median of 20 after 3 warm-ups.
    nlohmann::json runs = nlohmann::json::array();
    std::mt19937 rng(3);
    for (int tiles : tile_counts) {
        ImagePixels px{tiles, int32_t(vc.channels), int32_t(vc.image_size), int32_t(vc.image_size), {}};
        px.values.resize(size_t(tiles) * size_t(vc.channels) * size_t(vc.image_size) * size_t(vc.image_size));
        for (auto& v : px.values) v = uint8_t(rng());
        std::vector<double> times;
        for (int i = 0; i < 23; ++i) {
            backend.synchronize();
            const auto start = Clock::now();
            encoder.encode(px);
            backend.synchronize();
            if (i >= 3) times.push_back(ms_since(start));
        }
        const double ms = median(times), flops = encode_flops(vc, tiles);
        runs.push_back({{"tiles", tiles}, {"encode_ms", ms}, {"tflops", flops / ms / 1e9}, {"floor_ms", flops / (peak * 1e9)}});
    }

    // Time to first token: a 1920x1080 screenshot and a question of --prompt-len tokens.
    std::vector<double> ttft, decode, prep, ready;
    int tiles_used = 0;
    // The screenshot, then the question: one request, nothing cached from another pass.
    auto run = [&](std::shared_ptr<const ImagePixels> pixels, uint64_t hash, Clock::time_point start, bool ahead) {
        GenerationRequest r;
        r.prompt.push_back(1);
        const int32_t first = int32_t(r.prompt.size());
        const int32_t n = int32_t(pixels->tiles * vc.tokens_per_tile);
        r.prompt.insert(r.prompt.end(), size_t(n), std::max<int32_t>(0, vc.image_token_id));
        for (int k = 0; k < question; ++k) r.prompt.push_back(int32_t(100 + k));
        r.images.push_back({std::move(pixels), hash, first, n});
        r.max_new_tokens = 1;
        r.ignore_eos = true;
        EngineOptions options;
        options.prefill_chunk = int32_t(r.prompt.size());
        Scheduler scheduler(model, nullptr, options, blocks, int64_t(r.prompt.size()) + 2, &encoder);
        if (ahead) {
            // As the app does once an image is attached, while the question is being written.
            scheduler.encode_ahead(r.images.front());
            backend.synchronize();
            start = Clock::now();
        }
        std::vector<GenerationEvent> events;
        scheduler.add(1, std::move(r), start, events);
        while (scheduler.has_work()) scheduler.step(events);
        backend.synchronize();
        for (const auto& e : events)
            if (e.finish == FinishReason::Error) throw Error(e.error);
        return ms_since(start);
    };
    for (int pass = 0; pass < 6; ++pass) {
        const auto start = Clock::now();
        const vision::RgbImage image = vision::decode_image(png);
        const double decode_ms = ms_since(start);
        auto pixels = std::make_shared<const ImagePixels>(vision::preprocess(image, vc.preprocess));
        const double prep_ms = ms_since(start) - decode_ms;
        tiles_used = pixels->tiles;
        const double total = run(pixels, uint64_t(2 * pass + 1), start, false);
        const double after_attach = run(pixels, uint64_t(2 * pass + 2), start, true);
        if (pass >= 1) {
            ttft.push_back(total);
            decode.push_back(decode_ms);
            prep.push_back(prep_ms);
            ready.push_back(after_attach);
        }
    }

    return {{"vision_weight_bytes", encoder.weight_bytes()}, {"encode", runs}, {"ttft_tiles", tiles_used}, {"ttft_ms", median(ttft)},
            {"decode_ms", median(decode)}, {"preprocess_ms", median(prep)}, {"ttft_encoded_ahead_ms", median(ready)}};
}

}  // namespace

int run_bench_vision(const Args& args) {
    std::string device_description;
    auto backend = make_backend(args.value("device").value_or("auto"), &device_description);
    std::filesystem::path dir;
    ModelConfig config;
    std::unique_ptr<Model> model;
    std::string source;
    const std::string d = args.value("dtype").value_or("bf16");
    const DType dtype = d == "bf16" ? DType::BF16 : d == "fp16" ? DType::F16 : d == "fp32" ? DType::F32
                                                  : throw Error("--dtype must be bf16, fp16 or fp32");
    if (const auto m = args.value("model")) {
        dir = *m;
        model = std::make_unique<Model>(dir, *backend);
        config = model->config();
        source = *m;
    } else {
        const auto path = args.required("config");
        if (!args.flag("random-weights")) throw Error("--config needs --random-weights (or give --model DIR)");
        const auto text = read_text_file(path, kConfigFile);
        if (!text) throw Error(path + ": no such file");
        config = parse_model_config(*text, path);
        dir = std::filesystem::path(path).parent_path();
        model = std::make_unique<Model>(config, *backend, dtype, uint64_t(args.integer("seed", 1, 0, std::numeric_limits<int64_t>::max())));
        source = path + " (random " + d + " weights)";
    }
    if (!config.is_vision_language()) throw Error(source + " is not a vision-language model");
    const vision::VisionConfig vc = vision::load_vision_config(dir, config, nullptr);
    std::vector<int> tile_counts;
    for (const long long n : args.integers("tiles", vc.kind == ModelKind::Llava ? "1" : "1,7,13", 1, 128)) tile_counts.push_back(int(n));
    const double peak = args.number("peak-tflops", 989.0);  // H100 SXM dense BF16; say what your card does
    const TextConfig& t = model->text();
    const int32_t block = 64;
    const int64_t image_tokens_max = int64_t(vc.preprocess.max_tiles + 1) * vc.tokens_per_tile;
    const int question = int(args.integer("prompt-len", 20, 0, 1 << 20));
    const int32_t blocks = int32_t((image_tokens_max + question + 64 + block - 1) / block + 2);
    backend->allocate_kv_cache({int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), block, blocks, backend->compute_dtype()});
    const std::vector<uint8_t> png = screenshot_png();

    // Each --vision-weights choice in turn, one encoder at a time, in the same process.
    nlohmann::json results = nlohmann::json::array();
    const uint64_t seed = uint64_t(args.integer("seed", 1, 0, std::numeric_limits<int64_t>::max())) + 1000;
    for (const std::string& choice : args.list("vision-weights", "auto")) {
        const vision::TowerWeights tower = vision::parse_tower_weights(choice);
        auto encoder = args.value("model") ? std::make_unique<vision::VisionEncoder>(dir, vc, *backend, tower)
                                           : std::make_unique<vision::VisionEncoder>(vc, *backend, dtype, seed, tower);
        results.push_back(bench_encoder(*backend, *model, *encoder, vc, tile_counts, peak, question, blocks, png));
        results.back()["vision_weights"] = tower == vision::TowerWeights::Fp8 ? "fp8" : "as stored";
    }
    nlohmann::json out{{"source", source}, {"device", device_description}, {"peak_tflops", peak}, {"ttft_question_tokens", question},
                       {"runs", results}};
    if (args.flag("json")) {
        std::cout << out.dump() << "\n";
        return 0;
    }
    std::printf("%s on %s\n", source.c_str(), device_description.c_str());
    for (const auto& r : results) {
        std::printf("\nvision weights %s: %s\n%6s %11s %9s %11s\n", r["vision_weights"].get<std::string>().c_str(),
                    format_bytes(r["vision_weight_bytes"].get<uint64_t>()).c_str(), "tiles", "encode ms", "TFLOP/s", "floor ms");
        for (const auto& e : r["encode"])
            std::printf("%6d %11.2f %9.1f %11.2f\n", e["tiles"].get<int>(), e["encode_ms"].get<double>(), e["tflops"].get<double>(),
                        e["floor_ms"].get<double>());
        std::printf("time to first token, 1920x1080 PNG (%d tiles) + %d-token question: %.1f ms (decoding %.1f ms, preprocessing %.1f ms)\n",
                    r["ttft_tiles"].get<int>(), question, r["ttft_ms"].get<double>(), r["decode_ms"].get<double>(),
                    r["preprocess_ms"].get<double>());
        std::printf("time to first token once the image was prepared and encoded ahead (as the app does on attaching it): %.1f ms\n",
                    r["ttft_encoded_ahead_ms"].get<double>());
    }
    return 0;
}

}  // namespace lumen::cli
