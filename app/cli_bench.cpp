// `lumen-cli bench`: prefill and decode speed at given shapes, next to the memory-bandwidth floor.
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

namespace lumen::cli {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct BatchResult {
    int quant_policy;            // the KV cache's bits (0: the compute type)
    int batch;
    double prefill_ms;           // steps that ran prompt tokens
    double first_token_ms;       // mean over requests, from submission
    double decode_step_ms;       // median pure-decode step
    double decode_tokens_per_s;  // per sequence
    double total_tokens_per_s;
    double floor_tokens_per_s;   // per sequence, if only the bytes had to move
    double floor_share;
    double bytes_per_step;
};

}  // namespace

int run_bench(const std::vector<std::string>& argv) {
    const Args args(argv, {"model", "config", "batch", "prompt-len", "gen-len", "dtype", "device", "seed", "tiles", "peak-tflops",
                           "temperature", "top-k", "top-p", "weights", "group-size", "quant-policy", "vision-weights"},
                    {"random-weights", "json", "help", "vision"});
    if (args.flag("help")) {
        std::puts("Usage: lumen-cli bench (--model DIR | --config config.json --random-weights) [--batch 1,16,64]\n"
                  "                       [--prompt-len 512] [--gen-len 128] [--dtype bf16|fp16|fp32]\n"
                  "                       [--device cpu|cuda|auto] [--weights auto|16|int8|int4|fp8] [--group-size 128]\n"
                  "                       [--quant-policy 0,8,4] [--temperature T] [--top-k K] [--top-p P] [--json]\n\n"
                  "For each batch size: prefill time, time to first token, decode tokens/s per sequence and in\n"
                  "total, and the floor: the bytes a decode step must read (weights and KV cache) over the\n"
                  "measured memory bandwidth. --random-weights makes seeded random weights of the config's\n"
                  "shapes where they run, so real shapes need no download. Decoding is greedy unless\n"
                  "--temperature (with --top-k, --top-p) asks for sampling. --quant-policy runs each batch with a\n"
                  "16-bit (0), 8-bit or 4-bit KV cache, and says how many tokens and how many sessions of\n"
                  "prompt + new tokens each holds in 80% of the memory left after the weights.\n\n"
                  "--vision [--tiles 1,7,13] [--peak-tflops 989] [--vision-weights 16,fp8] times a vision-language\n"
                  "model's encoder and projector for each tile count (with the floor at the card's dense 16-bit\n"
                  "peak), and the time to first token for a 1920x1080 image with a --prompt-len (default 20) token\n"
                  "question, once for each listed form of the encoder's layers (as stored, or FP8 made at load).");
        return 0;
    }
    if (args.flag("vision")) return run_bench_vision(args);
    const int prompt_len = int(args.integer("prompt-len", 512, 1, 1 << 20));
    const int gen_len = int(args.integer("gen-len", 128, 1, 1 << 20));
    std::vector<int> batches;
    for (const long long n : args.integers("batch", "1", 1, 4096)) batches.push_back(int(n));
    if (prompt_len < 1 || gen_len < 2) throw Error("--prompt-len must be >= 1 and --gen-len >= 2");

    std::string device_description;
    auto backend = make_backend(args.value("device").value_or("auto"), &device_description);
    const auto load_start = Clock::now();
    std::unique_ptr<Model> model;
    std::string source;
    const WeightChoice weights = weight_choice(args);
    if (const auto dir = args.value("model")) {
        model = std::make_unique<Model>(*dir, *backend, std::nullopt, weights);
        source = *dir;
    } else {
        const auto config_path = args.required("config");
        if (!args.flag("random-weights")) throw Error("--config needs --random-weights (or give --model DIR)");
        const auto text = read_text_file(config_path, kConfigFile);
        if (!text) throw Error(config_path + ": no such file");
        const ModelConfig config = parse_model_config(*text, config_path);
        const std::string d = args.value("dtype").value_or("bf16");
        const DType dtype = d == "bf16" ? DType::BF16 : d == "fp16" ? DType::F16 : d == "fp32" ? DType::F32
                                                      : throw Error("--dtype must be bf16, fp16 or fp32");
        model = std::make_unique<Model>(config, *backend, dtype, uint64_t(args.integer("seed", 1, 0, std::numeric_limits<int64_t>::max())),
                                        weights);
        source = config_path + " (random weights, " + d + (weights.kind == WeightChoice::Kind::AsStored ? "" : ", linear ones " + weights.describe()) + ")";
    }
    backend->synchronize();
    const double load_ms = ms_since(load_start);
    const TextConfig& t = model->text();
    const double bandwidth = backend->measure_read_bandwidth();

    std::vector<int> policies;
    for (const long long n : args.integers("quant-policy", "0", 0, 8)) {
        if (n != 0 && n != 4 && n != 8) throw Error("--quant-policy takes 0 (16-bit), 8 or 4 (got " + std::to_string(n) + ")");
        policies.push_back(int(n));
    }

    const int max_batch = *std::max_element(batches.begin(), batches.end());
    const int32_t block = 64;
    const int32_t session_blocks = (prompt_len + gen_len + block - 1) / block;
    const int32_t blocks = max_batch * (session_blocks + 1);
    // What each cache format holds in the engine's default share of the memory the weights leave.
    const double kv_budget = 0.8 * double(backend->free_memory());
    struct Capacity {
        int policy;
        double bytes_per_token;
        int64_t tokens, sessions;
    };
    std::vector<Capacity> capacities;
    std::vector<BatchResult> results;
    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> token(10, int32_t(t.vocab_size - 1));
    for (const int policy : policies) {
        const KvCacheShape kv{int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), block, blocks,
                              backend->compute_dtype(), policy};
        const auto budget_blocks = int64_t(kv_budget / double(kv.block_bytes()));
        capacities.push_back({policy, double(kv.block_bytes()) / block, budget_blocks * block, budget_blocks / session_blocks});
        backend->allocate_kv_cache(kv);
        const double kv_bytes_per_token = double(kv.block_bytes()) / block;
        for (int b : batches) {
            EngineOptions options;
            options.max_batch = b;
            options.prefill_chunk = std::max(2048, prompt_len);
            // Warm up (kernels, allocations, recorded graphs), then measure on a fresh scheduler. On a
            // GPU the warm-up runs the very same shapes; on the CPU a short run does.
            const bool full_warmup = device_description.rfind("cuda", 0) == 0;
            for (int pass = 0; pass < 2; ++pass) {
                Scheduler scheduler(*model, nullptr, options, blocks, prompt_len + gen_len + 1);
                std::vector<GenerationEvent> events;
                const bool short_pass = pass == 0 && !full_warmup;
                const int n = short_pass ? 1 : b;
                const int gen = short_pass ? 4 : gen_len;
                const auto submitted = Clock::now();
                for (int i = 0; i < n; ++i) {
                    GenerationRequest r;
                    for (int k = 0; k < (short_pass ? std::min(prompt_len, 64) : prompt_len); ++k) r.prompt.push_back(token(rng));
                    // Greedy unless asked: the speed of sampling itself is measured with these.
                    r.sampling.temperature = float(args.number("temperature", 0.0));
                    r.sampling.top_k = int32_t(args.integer("top-k", 0, 0, std::numeric_limits<int32_t>::max()));
                    r.sampling.top_p = float(args.number("top-p", 1.0));
                    r.sampling.seed = uint64_t(i + 1);
                    r.max_new_tokens = gen;
                    r.ignore_eos = true;
                    scheduler.add(RequestId(i + 1), std::move(r), submitted, events);
                }
                double prefill_ms = 0;
                std::vector<double> decode_steps;
                double bytes = 0;
                while (scheduler.has_work()) {
                    const auto start = Clock::now();
                    scheduler.step(events);
                    backend->synchronize();
                    const double step_ms = ms_since(start);
                    const auto& stats = scheduler.last_step();
                    if (stats.prompt_tokens > 0) {
                        prefill_ms += step_ms;
                    } else if (stats.sequences == n) {
                        decode_steps.push_back(step_ms);
                        bytes += double(model->weight_bytes()) + double(stats.context_tokens) * kv_bytes_per_token;
                    }
                }
                if (pass == 0) continue;
                double first = 0;
                for (const auto& e : events)
                    if (e.finish == FinishReason::Error) throw Error(e.error);
                    else if (e.finish != FinishReason::None) first += e.timings.first_token_ms / n;
                std::sort(decode_steps.begin(), decode_steps.end());
                const double median = decode_steps.empty() ? 0 : decode_steps[decode_steps.size() / 2];
                const double per_step = decode_steps.empty() ? 0 : bytes / double(decode_steps.size());
                BatchResult r{policy, b, prefill_ms, first, median, median > 0 ? 1000.0 / median : 0, median > 0 ? b * 1000.0 / median : 0,
                              per_step > 0 ? bandwidth / per_step : 0, 0, per_step};
                r.floor_share = r.floor_tokens_per_s > 0 ? r.decode_tokens_per_s / r.floor_tokens_per_s : 0;
                results.push_back(r);
            }
        }

    }

    if (args.flag("json")) {
        nlohmann::json out{{"source", source},
                           {"device", device_description},
                           {"load_ms", load_ms},
                           {"weight_bytes", model->weight_bytes()},
                           {"weights", model->weights_description()},
                           {"kv_budget_bytes", kv_budget},
                           {"read_bandwidth_gb_s", bandwidth / 1e9},
                           {"prompt_len", prompt_len},
                           {"gen_len", gen_len},
                           {"kv_caches", nlohmann::json::array()},
                           {"runs", nlohmann::json::array()}};
        for (const auto& c : capacities)
            out["kv_caches"].push_back({{"quant_policy", c.policy},
                                        {"bytes_per_token", c.bytes_per_token},
                                        {"tokens_held", c.tokens},
                                        {"sessions_held", c.sessions}});
        for (const auto& r : results)
            out["runs"].push_back({{"quant_policy", r.quant_policy},
                                   {"batch", r.batch},
                                   {"prefill_ms", r.prefill_ms},
                                   {"first_token_ms", r.first_token_ms},
                                   {"decode_step_ms", r.decode_step_ms},
                                   {"decode_tokens_per_s", r.decode_tokens_per_s},
                                   {"total_tokens_per_s", r.total_tokens_per_s},
                                   {"floor_tokens_per_s", r.floor_tokens_per_s},
                                   {"floor_share", r.floor_share},
                                   {"bytes_per_step", r.bytes_per_step}});
        std::cout << out.dump() << "\n";
        return 0;
    }
    std::printf("%s on %s\nweights %s (%s), loaded in %.0f ms; measured read bandwidth %.1f GB/s\n"
                "prompt %d tokens, %d new tokens per sequence\n\n",
                source.c_str(), device_description.c_str(), format_bytes(model->weight_bytes()).c_str(),
                model->weights_description().c_str(), load_ms,
                bandwidth / 1e9, prompt_len, gen_len);
    for (const auto& c : capacities)
        std::printf("KV cache %2d-bit: %s per token; %s tokens, %s sessions of %d tokens in %s\n",
                    c.policy ? c.policy : int(dtype_size(backend->compute_dtype()) * 8), format_bytes(uint64_t(c.bytes_per_token)).c_str(),
                    format_count(c.tokens).c_str(), format_count(c.sessions).c_str(), prompt_len + gen_len,
                    format_bytes(uint64_t(kv_budget)).c_str());
    std::printf("\n%6s %6s %11s %11s %11s %13s %13s %13s %7s\n", "KV", "batch", "prefill ms", "TTFT ms", "step ms", "tok/s/seq",
                "tok/s total", "floor tok/s", "share");
    for (const auto& r : results)
        std::printf("%6s %6d %11.1f %11.1f %11.2f %13.1f %13.1f %13.1f %6.0f%%\n",
                    (std::to_string(r.quant_policy ? r.quant_policy : int(dtype_size(backend->compute_dtype()) * 8)) + "-bit").c_str(), r.batch, r.prefill_ms, r.first_token_ms,
                    r.decode_step_ms, r.decode_tokens_per_s, r.total_tokens_per_s, r.floor_tokens_per_s, 100 * r.floor_share);
    return 0;
}

}  // namespace lumen::cli
