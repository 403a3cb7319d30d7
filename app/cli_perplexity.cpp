// `lumen-cli perplexity`: how well a model predicts a text, over sliding windows as transformers'
// perplexity guide computes it: windows of --context tokens every --stride tokens, each scoring
// only the tokens the previous window did not, every token predicted from what precedes it inside
// its window.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>

#include "app/cli_args.h"
#include "app/cli_commands.h"
#include "engine/backend/backend_factory.h"
#include "engine/model/model.h"
#include "engine/text/tokenizer.h"
#include "engine/util/error.h"
#include "engine/util/text_file.h"

namespace lumen::cli {

int run_perplexity(const std::vector<std::string>& argv) {
    const Args args(argv, {"model", "file", "context", "stride", "device", "dtype", "weights", "group-size", "quant-policy"},
                    {"json", "help"});
    if (args.flag("help")) {
        std::printf("Usage: lumen-cli perplexity --model DIR --file TEXT [--context N] [--stride N]\n"
                    "                            [--device cpu|cuda|auto] [--dtype auto|float32|bfloat16|float16] [--json]\n\n"
                    "Perplexity of the model on a text file (tokenized whole, with the tokenizer's BOS), over\n"
                    "windows of --context tokens (default: the model's context, at most 1024) moved by --stride\n"
                    "tokens (default half the context); each token is scored once, from the window that first\n"
                    "reaches it. --json prints {\"perplexity\": P, \"tokens\": N} as the last line.\n\n%s%s",
                    kWeightsHelp, kQuantPolicyHelp);
        return 0;
    }
    const std::filesystem::path dir = args.required("model");
    const std::string file = args.required("file");
    const auto text = read_text_file(file, kTextInput);
    if (!text) throw Error(file + ": no such file");
    const auto tokenizer = Tokenizer::load(dir);
    const std::vector<int32_t> ids = tokenizer->encode(*text);
    if (ids.size() < 2) throw Error(file + ": too short to score (it has " + std::to_string(ids.size()) + " token)");

    std::optional<DType> compute;
    const std::string dtype = args.value("dtype").value_or("auto");
    if (dtype == "float32") compute = DType::F32;
    else if (dtype == "bfloat16") compute = DType::BF16;
    else if (dtype == "float16") compute = DType::F16;
    else if (dtype != "auto") throw Error("unknown dtype '" + dtype + "' (choose auto, float32, bfloat16 or float16)");
    std::string device;
    auto backend = make_backend(args.value("device").value_or("auto"), &device);
    Model model(dir, *backend, compute, weight_choice(args));
    const TextConfig& t = model.text();

    const int64_t context = args.integer("context", std::min<int64_t>(t.max_position_embeddings, 1024), 2, 1 << 20);
    const int64_t stride = args.integer("stride", std::max<int64_t>(1, context / 2), 1, context);
    constexpr int32_t kBlock = 64;
    constexpr int64_t kChunk = 512;  // tokens per forward: bounds the logits held at once
    const int32_t blocks = int32_t((context + kBlock - 1) / kBlock);
    backend->allocate_kv_cache({int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), kBlock, blocks,
                                backend->compute_dtype(), quant_policy(args)});

    const int64_t n = int64_t(ids.size());
    double nll = 0;
    int64_t scored = 0, prev_end = 0;
    std::vector<float> logits;
    for (int64_t begin = 0;; begin += stride) {
        const int64_t end = std::min(begin + context, n);
        const int64_t first_target = std::max(prev_end, begin + 1);
        for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
            const int64_t c1 = std::min(c0 + kChunk, end);
            BatchLayout batch;
            for (int64_t i = c0; i < c1; ++i) {
                batch.token_ids.push_back(ids[std::size_t(i)]);
                batch.positions.push_back(int32_t(i - begin));
                batch.token_seq.push_back(0);
                batch.rope_lengths.push_back(int32_t(end - begin));  // one forward over the window, as transformers runs it
                if (i + 1 >= first_target && i + 1 < end) batch.logit_rows.push_back(int32_t(i - c0));
            }
            batch.max_blocks = blocks;
            for (int32_t b = 0; b < blocks; ++b) batch.block_tables.push_back(b);
            const Tensor out = model.forward(batch);
            if (batch.logit_rows.empty()) continue;
            logits.resize(std::size_t(out.rows * out.cols));
            backend->read(out, logits);
            for (std::size_t r = 0; r < batch.logit_rows.size(); ++r) {
                const float* row = logits.data() + r * std::size_t(out.cols);
                const int32_t target = ids[std::size_t(c0 + batch.logit_rows[r] + 1)];
                double peak = -std::numeric_limits<double>::infinity(), sum = 0;
                for (int64_t v = 0; v < out.cols; ++v) peak = std::max(peak, double(row[v]));
                for (int64_t v = 0; v < out.cols; ++v) sum += std::exp(double(row[v]) - peak);
                nll -= double(row[target]) - peak - std::log(sum);
                ++scored;
            }
        }
        prev_end = end;
        if (end == n) break;
    }
    const double perplexity = std::exp(nll / double(scored));
    if (args.flag("json")) {
        std::cout << nlohmann::json{{"perplexity", perplexity}, {"tokens", scored}}.dump() << "\n";
    } else {
        std::printf("perplexity %.4f over %lld tokens (context %lld, stride %lld; weights: %s; %s)\n", perplexity,
                    static_cast<long long>(scored), static_cast<long long>(context), static_cast<long long>(stride),
                    model.weights_description().c_str(), device.c_str());
    }
    return 0;
}

}  // namespace lumen::cli
