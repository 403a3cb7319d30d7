#pragma once
// Picks the next token from logits with the processors Hugging Face's generate applies, in its
// order: repetition penalty, then temperature, top-k, top-p and min-p. A seed makes it repeatable.
#include <cstdint>
#include <filesystem>
#include <random>
#include <span>
#include <vector>

namespace lumen {

struct SamplingParams {
    float temperature = 1.0f;  // 0: greedy
    int32_t top_k = 0;         // 0: off
    float top_p = 1.0f;        // 1: off
    float min_p = 0.0f;        // 0: off
    float repetition_penalty = 1.0f;
    uint64_t seed = 0;         // 0: a fresh random seed

    bool greedy() const { return temperature <= 0.0f || top_k == 1; }
};

// The sampling a model folder asks for in generation_config.json (greedy unless it sets do_sample),
// with transformers' defaults for what it leaves out.
SamplingParams load_generation_config(const std::filesystem::path& dir);

class Sampler {
public:
    explicit Sampler(const SamplingParams& params);

    // `logits` is modified. `history` is every token of the sequence so far (prompt and output),
    // which the repetition penalty looks at.
    int32_t sample(std::span<float> logits, std::span<const int32_t> history);

    const SamplingParams& params() const { return params_; }
    // True when the next token is simply the largest logit (greedy, no repetition penalty).
    bool argmax_only() const { return params_.greedy() && params_.repetition_penalty == 1.0f; }

private:
    SamplingParams params_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> candidates_;
    std::vector<double> probabilities_;
};

}  // namespace lumen
