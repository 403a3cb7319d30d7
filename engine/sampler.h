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

// One token from one row of logits (modified) with the processors of `params`; `penalized` holds
// each distinct earlier token of the sequence once (for the repetition penalty), `u` is a uniform
// draw in [0, 1). The kept tokens are walked in id order, so that the CUDA backend, walking them
// the same way, picks the same token for the same draw.
int32_t sample_logits(std::span<float> logits, const SamplingParams& params, std::span<const int32_t> penalized, double u);

// Each distinct token of `history` once, in first-seen order.
std::vector<int32_t> distinct_tokens(std::span<const int32_t> history);

// A sequence's sampling: its parameters and its own random stream.
class Sampler {
public:
    explicit Sampler(const SamplingParams& params);

    // `logits` is modified. `history` is every token of the sequence so far (prompt and output),
    // which the repetition penalty looks at.
    int32_t sample(std::span<float> logits, std::span<const int32_t> history);
    // The next uniform value in [0, 1) of this sequence's stream.
    double draw();

    const SamplingParams& params() const { return params_; }
    // True when the next token is simply the largest logit (greedy, no repetition penalty).
    bool argmax_only() const { return params_.greedy() && params_.repetition_penalty == 1.0f; }

private:
    SamplingParams params_;
    std::mt19937_64 rng_;
};

}  // namespace lumen
