// `lumen-cli quantize`: a 16-bit folder to 4 bits with AWQ, written in AutoAWQ's GEMM layout so that
// LMDeploy, vLLM and transformers load it too. The calibration text runs through our own engine
// (on the GPU when there is one), each layer's product inputs are summarised (engine/model/awq.h),
// and the folder is written beside OUT and renamed into place only when it is whole.
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <cstring>
#include <map>
#include <set>
#include <span>
#include <nlohmann/json.hpp>

#include "app/cli_args.h"
#include "app/cli_commands.h"
#include "engine/backend/backend_factory.h"
#include "engine/model/awq.h"
#include "engine/model/checkpoint.h"
#include "engine/model/model.h"
#include "engine/model/safetensors.h"
#include "engine/text/tokenizer.h"
#include "engine/util/error.h"
#include "engine/util/json_file.h"
#include "engine/util/text_file.h"

namespace lumen::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The calibration text used when none is given: plain prose of several kinds (stories, explanation,
// dialogue, instructions, numbers), written for Lumen.
constexpr const char* kCalibrationText = R"(The lighthouse keeper climbed the stairs every evening at the same hour. There were one hundred and twelve steps, and she knew each of them by the sound it made. When the lamp was lit she wrote the weather in a small notebook: wind from the west, a thin rain, three ships passing before midnight.
A battery stores energy as chemical potential. When a circuit connects its two ends, electrons flow from the negative terminal through the wire to the positive one, and the reaction inside the cell keeps the difference in voltage roughly constant until the materials are used up. Larger cells do not raise the voltage; they let the current last longer.
"Did you bring the map?" asked Tom.
"I thought you had it," said Mia. "We can ask at the station. The train to the coast leaves at twenty past nine, and the next one is not until the afternoon."
To repot a plant, water it the day before so the roots hold together. Choose a pot a little wider than the old one, put fresh soil in the bottom, lift the plant out by its base, loosen the outer roots with your fingers, and set it at the same depth it grew before. Fill around it, press gently, and water again.
In 1969 three astronauts flew to the Moon; two of them walked on its surface for about two and a half hours. The samples they brought back, 21.5 kilograms of rock and dust, showed that the Moon is about 4.5 billion years old and formed from material very like the Earth's mantle.
The market opens before sunrise. Farmers unload crates of tomatoes, onions and peppers, a baker sets out round loaves still warm from the oven, and by seven o'clock the square is full of people bargaining, laughing and calling to one another across the stalls.
A function that calls itself is called recursive. Each call must work on a smaller problem than the one before, and there must be a case simple enough to answer directly; otherwise the calls never end. Sorting a list by splitting it in two, sorting each half and merging them is a classic example.
Rivers carry sand and silt from the mountains to the sea. Where the water slows, at a bend or a river mouth, the heavier grains settle first, and over thousands of years they build beaches, deltas and wide, flat plains that are some of the most fertile land on Earth.
The old man fed the pigeons every morning with crumbs from his breakfast. One winter day a small grey bird landed on his hand and stayed there, and after that it came back each day, waiting on the bench before he arrived.
)";

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted = true; }

// A progress line on stderr with the time left, estimated from the steps done so far.
class Progress {
public:
    Progress(std::string what, int64_t total) : what_(std::move(what)), total_(total), start_(Clock::now()), tty_(isatty(STDERR_FILENO)) {}
    void update(int64_t done) {
        const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
        const double left = done > 0 ? elapsed / double(done) * double(total_ - done) : 0;
        constexpr int kWidth = 30;
        const int filled = int(kWidth * done / std::max<int64_t>(1, total_));
        std::string bar(std::size_t(filled), '#');
        bar.resize(kWidth, '.');
        std::fprintf(stderr, "%s%s [%s] %lld/%lld, %s left%s", tty_ ? "\r" : "", what_.c_str(), bar.c_str(), static_cast<long long>(done),
                     static_cast<long long>(total_), duration(left).c_str(), tty_ ? "   " : "\n");
        if (done == total_ && tty_) std::fputc('\n', stderr);
        std::fflush(stderr);
    }

private:
    static std::string duration(double seconds) {
        const long long s = std::llround(seconds);
        return s >= 60 ? std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s" : std::to_string(s) + "s";
    }
    std::string what_;
    int64_t total_;
    Clock::time_point start_;
    bool tty_;
};

void check_interrupted() {
    if (g_interrupted) throw Error("interrupted: nothing was written");
}

std::vector<float> f32_of(const TensorInfo& t) {
    std::vector<float> v(std::size_t(t.numel()));
    to_f32(t.data.data(), t.dtype, v.size(), v.data());
    return v;
}

// Bytes of `values` in `dtype` (F32, F16 or BF16).
std::vector<std::byte> stored_as(const std::vector<float>& values, DType dtype) {
    std::vector<std::byte> out(values.size() * dtype_size(dtype));
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (dtype == DType::F32) {
            std::memcpy(out.data() + 4 * i, &values[i], 4);
        } else {
            const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
            std::memcpy(out.data() + 2 * i, &h, 2);
        }
    }
    return out;
}

template <class T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
    return {reinterpret_cast<const std::byte*>(v.data()), v.size() * sizeof(T)};
}

}  // namespace

int run_quantize(const std::vector<std::string>& argv) {
    const Args args(argv, {"model", "out", "w-bits", "group-size", "calib", "calib-samples", "calib-seqlen", "device", "method"}, {"help"});
    if (args.flag("help")) {
        std::puts("Usage: lumen-cli quantize --model DIR --out DIR [--w-bits 4] [--group-size 128] [--calib FILE]\n"
                  "                          [--calib-samples 128] [--calib-seqlen 1024] [--device cpu|cuda|auto]\n"
                  "                          [--method awq|rtn]\n\n"
                  "Quantizes a 16-bit model folder's language model to 4 bits with AWQ (activation-aware scales\n"
                  "and clipping, searched on a calibration text: FILE, or a built-in one) and writes it to OUT in\n"
                  "AutoAWQ's GEMM layout with the config, generation config and tokenizer files, so that LMDeploy,\n"
                  "vLLM and transformers can load it as well. The vision tower, projector, embeddings and output\n"
                  "projection stay 16-bit, and so do products whose inputs the group size does not divide. The\n"
                  "calibration runs on the GPU when there is one. OUT must not exist; it appears only when whole\n"
                  "(Ctrl+C leaves nothing behind). --method rtn skips the search (round to nearest, for comparison).");
        return 0;
    }
    const fs::path dir = args.required("model"), out_dir = args.required("out");
    if (args.integer("w-bits", 4, 4, 4) != 4) throw Error("--w-bits: only 4 is supported");
    const int32_t group = int32_t(args.integer("group-size", 128, 32, 4096));
    if (group % 32 != 0) throw Error("--group-size must be a multiple of 32");
    const std::string method = args.value("method").value_or("awq");
    if (method != "awq" && method != "rtn") throw Error("--method: choose awq or rtn");
    const bool search = method == "awq";
    const int64_t samples = args.integer("calib-samples", 128, 1, 100000);
    int64_t seqlen = args.integer("calib-seqlen", 1024, 16, 1 << 16);
    if (fs::exists(out_dir)) throw Error(out_dir.string() + " already exists; choose a new folder for the quantized model");
    require_folder(dir);

    const ModelConfig config = load_model_config(dir);
    seqlen = std::min<int64_t>(seqlen, config.text.max_position_embeddings);  // windows the model was trained for
    if (load_quantization(dir, config.raw).quantized()) throw Error(dir.string() + " is already quantized; quantize a 16-bit folder");
    const auto tokenizer = Tokenizer::load(dir);
    std::string text = kCalibrationText;
    if (const auto file = args.value("calib")) {
        const auto t = read_text_file(*file, kTextInput);
        if (!t) throw Error(*file + ": no such file");
        text = *t;
    }
    const std::vector<int32_t> ids = tokenizer->encode(text);
    if (ids.size() < 16) throw Error("the calibration text is too short (" + std::to_string(ids.size()) + " tokens)");

    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);

    // 1. Calibration: the text in windows through our own forward, each product input summarised.
    const TextConfig& t = config.text;
    const int64_t windows = std::min<int64_t>(samples, (int64_t(ids.size()) + seqlen - 1) / seqlen);
    const int64_t tokens = std::min<int64_t>(int64_t(ids.size()), windows * seqlen);
    constexpr int64_t kSamples = 256;
    const int64_t stride = std::max<int64_t>(1, tokens / kSamples);
    const int64_t q = t.num_heads * t.head_dim;
    std::vector<std::array<InputStats, 4>> stats;
    for (int64_t l = 0; l < t.num_layers; ++l)
        stats.push_back({InputStats(t.hidden_size), InputStats(q), InputStats(t.hidden_size), InputStats(t.intermediate_size)});
    {
        std::string device;
        auto backend = make_backend(args.value("device").value_or("auto"), &device);
        Model model(dir, *backend);
        constexpr int32_t kBlock = 64;
        const int32_t blocks = int32_t((seqlen + kBlock - 1) / kBlock);
        backend->allocate_kv_cache({int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), kBlock, blocks, backend->compute_dtype()});
        std::fprintf(stderr, "calibrating on %s with %lld tokens in %lld windows\n", device.c_str(), static_cast<long long>(tokens),
                     static_cast<long long>(windows));
        Progress progress("calibration", windows);
        std::vector<float> host;
        for (int64_t w = 0; w < windows; ++w) {
            check_interrupted();
            const int64_t begin = w * seqlen, end = std::min(begin + seqlen, tokens);
            BatchLayout batch;
            for (int64_t i = begin; i < end; ++i) {
                batch.token_ids.push_back(ids[std::size_t(i)]);
                batch.positions.push_back(int32_t(i - begin));
                batch.token_seq.push_back(0);
                batch.rope_lengths.push_back(int32_t(end - begin));
            }
            batch.max_blocks = blocks;
            for (int32_t b = 0; b < blocks; ++b) batch.block_tables.push_back(b);
            model.forward(batch, [&](int64_t layer, Model::ProductInput input, const Tensor& x) {
                host.resize(std::size_t(x.rows * x.cols));
                backend->read(x, host);
                stats[std::size_t(layer)][std::size_t(input)].add(host.data(), x.rows, stride, kSamples);
            });
            progress.update(w + 1);
        }
    }

    // 2. Per layer: scales searched and folded into the op before each product, clipping, 4 bits.
    const Checkpoint checkpoint(dir);
    const WeightNames names = resolve_weight_names(config, checkpoint);
    const LayerNames ln = layer_names(t.family);
    const Quantization none;
    auto cpu = make_cpu_backend();
    std::map<std::string, std::vector<std::byte>> replaced;  // tensor name -> new bytes (in its dtype or packed)
    std::map<std::string, std::pair<DType, std::vector<int64_t>>> shapes;
    std::vector<std::string> kept_16_bit;
    std::vector<std::string> removed;
    auto dense = [&](const std::string& module, int64_t rows, int64_t cols) { return dequantize(read_linear(checkpoint, none, module, rows, cols)); };
    // A product that stays 16-bit: its scaled weight written back in its stored type.
    auto keep_dense = [&](const std::string& module, const std::vector<float>& w) {
        const TensorInfo& info = checkpoint.get(module + ".weight");
        replaced[module + ".weight"] = stored_as(w, info.dtype);
        kept_16_bit.push_back(module);
    };
    // AutoAWQ's words hold eight outputs: a product with other row counts stays 16-bit.
    auto write_packed = [&](const std::string& module, const std::vector<float>& w, int64_t rows, int64_t cols) {
        if (rows % 8 != 0) return keep_dense(module, w);
        HostWeight h;
        h.rows = rows, h.cols = cols, h.dtype = DType::F32, h.mapped = reinterpret_cast<const std::byte*>(w.data());
        const AwqTensors a = pack_awq_gemm(quantize_int4(h, group));
        replaced[module + ".qweight"].assign(bytes_of(a.qweight).begin(), bytes_of(a.qweight).end());
        replaced[module + ".qzeros"].assign(bytes_of(a.qzeros).begin(), bytes_of(a.qzeros).end());
        replaced[module + ".scales"].assign(bytes_of(a.scales).begin(), bytes_of(a.scales).end());
        shapes[module + ".qweight"] = {DType::I32, {a.in, a.out / 8}};
        shapes[module + ".qzeros"] = {DType::I32, {a.groups, a.out / 8}};
        shapes[module + ".scales"] = {DType::F16, {a.groups, a.out}};
        removed.push_back(module + ".weight");
    };
    auto scale_columns = [](std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<float>& s) {
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) w[std::size_t(r * cols + c)] *= s[std::size_t(c)];
    };
    auto stack = [](std::initializer_list<const std::vector<float>*> parts) {
        std::vector<float> all;
        for (const auto* p : parts) all.insert(all.end(), p->begin(), p->end());
        return all;
    };
    const int64_t h = t.hidden_size, kv = t.num_kv_heads * t.head_dim, inter = t.intermediate_size;
    const bool packed_qkv = ln.qkv.size() == 1;
    Progress progress("quantizing layers", t.num_layers);
    for (int64_t l = 0; l < t.num_layers; ++l) {
        check_interrupted();
        const std::string p = names.layer + std::to_string(l) + ".";
        auto& st = stats[std::size_t(l)];
        const std::vector<float> ones_h(std::size_t(h), 1.0f), ones_q(std::size_t(q), 1.0f), ones_i(std::size_t(inter), 1.0f);
        // q/k/v, scaled into the attention norm.
        std::vector<std::vector<float>> qkv;
        std::vector<int64_t> qkv_rows;
        if (packed_qkv) qkv_rows = {q + 2 * kv};
        else qkv_rows = {q, kv, kv};
        for (std::size_t i = 0; i < ln.qkv.size(); ++i) qkv.push_back(dense(p + ln.qkv[i], qkv_rows[i], h));
        std::vector<float> wo = dense(p + ln.o, h, q), wg = dense(p + ln.gate, inter, h), wu = dense(p + ln.up, inter, h),
                           wd = dense(p + ln.down, h, inter);
        std::vector<float> attn_norm = f32_of(checkpoint.get(p + ln.attn_norm + ".weight")),
                           ffn_norm = f32_of(checkpoint.get(p + ln.ffn_norm + ".weight"));
        const bool h_fits = h % group == 0, q_fits = q % group == 0, inter_fits = inter % group == 0;
        std::vector<float> s_qkv = ones_h, s_o = ones_q, s_gu = ones_h, s_d = ones_i;
        if (h_fits && search) {
            std::vector<float> all;
            for (const auto& w : qkv) all.insert(all.end(), w.begin(), w.end());
            int64_t rows = 0;
            for (int64_t r : qkv_rows) rows += r;
            s_qkv = awq_search_scales(*cpu, all, rows, h, st[0], group);
            const std::vector<float> gu = stack({&wg, &wu});
            s_gu = awq_search_scales(*cpu, gu, 2 * inter, h, st[2], group);
        }
        // o folds into v's rows only where they map one to one (no grouped keys and values).
        const bool o_folds = search && !packed_qkv && t.num_kv_heads == t.num_heads && q_fits;
        if (o_folds) s_o = awq_search_scales(*cpu, wo, h, q, st[1], group);
        if (inter_fits && search) s_d = awq_search_scales(*cpu, wd, h, inter, st[3], group);
        // Fold: the op before each product divided by s, the product's columns multiplied by it.
        for (int64_t c = 0; c < h; ++c) attn_norm[std::size_t(c)] /= s_qkv[std::size_t(c)], ffn_norm[std::size_t(c)] /= s_gu[std::size_t(c)];
        for (std::size_t i = 0; i < qkv.size(); ++i) scale_columns(qkv[i], qkv_rows[i], h, s_qkv);
        if (o_folds)
            for (int64_t r = 0; r < kv; ++r)
                for (int64_t c = 0; c < h; ++c) qkv[2][std::size_t(r * h + c)] /= s_o[std::size_t(r)];
        scale_columns(wo, h, q, s_o);
        scale_columns(wg, inter, h, s_gu);
        scale_columns(wu, inter, h, s_gu);
        for (int64_t r = 0; r < inter; ++r)
            for (int64_t c = 0; c < h; ++c) wu[std::size_t(r * h + c)] /= s_d[std::size_t(r)];
        scale_columns(wd, h, inter, s_d);
        // Clipping (not of q and k, whose errors attention's softmax forgives least), then 4 bits.
        if (search) {
            if (q_fits) awq_clip(wo, h, q, st[1], s_o, group);
            if (h_fits) awq_clip(wg, inter, h, st[2], s_gu, group), awq_clip(wu, inter, h, st[2], s_gu, group);
            if (inter_fits) awq_clip(wd, h, inter, st[3], s_d, group);
        }
        for (std::size_t i = 0; i < qkv.size(); ++i)
            h_fits ? write_packed(p + ln.qkv[i], qkv[i], qkv_rows[i], h) : keep_dense(p + ln.qkv[i], qkv[i]);
        q_fits ? write_packed(p + ln.o, wo, h, q) : keep_dense(p + ln.o, wo);
        h_fits ? write_packed(p + ln.gate, wg, inter, h) : keep_dense(p + ln.gate, wg);
        h_fits ? write_packed(p + ln.up, wu, inter, h) : keep_dense(p + ln.up, wu);
        inter_fits ? write_packed(p + ln.down, wd, h, inter) : keep_dense(p + ln.down, wd);
        replaced[p + ln.attn_norm + ".weight"] = stored_as(attn_norm, checkpoint.get(p + ln.attn_norm + ".weight").dtype);
        replaced[p + ln.ffn_norm + ".weight"] = stored_as(ffn_norm, checkpoint.get(p + ln.ffn_norm + ".weight").dtype);
        progress.update(l + 1);
    }

    // 3. The folder, written beside OUT and renamed into place when whole.
    const fs::path partial = out_dir.string() + ".partial-" + std::to_string(getpid());
    try {
        fs::create_directories(partial);
        for (const auto& entry : fs::directory_iterator(dir)) {
            const std::string name = entry.path().filename().string();
            const bool weights = name.ends_with(".safetensors") || name == "model.safetensors.index.json" || name.ends_with(".bin") ||
                                 name.ends_with(".pt") || name.ends_with(".pth") || name == "config.json" || name == "quantize_config.json";
            if (!weights && entry.is_regular_file()) fs::copy_file(entry.path(), partial / name);
        }
        nlohmann::json out_config = config.raw;
        std::vector<std::string> not_converted = kept_16_bit;
        if (config.is_vision_language())
            for (const char* m : {"vision_model", "vision_tower", "mlp1", "multi_modal_projector"}) not_converted.push_back(m);
        out_config["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", group}, {"version", "gemm"},
                                             {"zero_point", true}, {"modules_to_not_convert", not_converted}};
        {
            std::ofstream f(partial / "config.json");
            f << out_config.dump(2) << "\n";
            if (!f) throw Error((partial / "config.json").string() + ": could not be written");
        }
        // Every tensor: replaced ones as made above, the rest as stored, in shards of at most 4 GiB.
        std::vector<TensorToWrite> all;
        const std::set<std::string> gone(removed.begin(), removed.end());
        for (const TensorInfo* info : checkpoint.tensors()) {
            if (gone.count(info->name)) continue;
            const auto it = replaced.find(info->name);
            all.push_back({info->name, info->dtype, info->shape, it == replaced.end() ? info->data : std::span<const std::byte>(it->second)});
        }
        for (const auto& [name, shape] : shapes) all.push_back({name, shape.first, shape.second, std::span<const std::byte>(replaced.at(name))});
        std::vector<std::vector<TensorToWrite>> shards(1);
        uint64_t size = 0;
        for (auto& tw : all) {
            if (size + tw.data.size() > (uint64_t(4) << 30) && !shards.back().empty()) shards.emplace_back(), size = 0;
            shards.back().push_back(tw);
            size += tw.data.size();
        }
        nlohmann::json index{{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
        for (std::size_t i = 0; i < shards.size(); ++i) {
            check_interrupted();
            char name[64];
            std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
            const std::string file = shards.size() == 1 ? "model.safetensors" : name;
            write_safetensors(partial / file, shards[i], {{"format", "pt"}});
            for (const auto& tw : shards[i]) index["weight_map"][tw.name] = file;
        }
        if (shards.size() > 1) {
            std::ofstream f(partial / "model.safetensors.index.json");
            f << index.dump(2) << "\n";
        }
        check_interrupted();
        fs::rename(partial, out_dir);
    } catch (...) {
        std::error_code ignored;
        fs::remove_all(partial, ignored);
        throw;
    }
    std::fprintf(stderr, "wrote %s: %s 4-bit, groups of %d%s\n", out_dir.c_str(), search ? "AWQ" : "round-to-nearest", group,
                 kept_16_bit.empty() ? ""
                                     : (", " + std::to_string(kept_16_bit.size()) +
                                        " products kept 16-bit (widths the group size or AutoAWQ's eight outputs a word do not divide)")
                                           .c_str());
    return 0;
}

}  // namespace lumen::cli
