#pragma once
// The token choice every backend makes from logits, with the processors Hugging Face's generate
// applies, in its order: repetition penalty, then temperature, top-k, top-p and min-p. This is the
// reference the CUDA backend's sampling is checked against.
#include <cstdint>
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

// One token from one row of logits (modified) with the processors of `params`; `penalized` holds
// each distinct earlier token of the sequence once (for the repetition penalty), `u` is a uniform
// draw in [0, 1). The kept tokens are walked in id order, so that the CUDA backend, walking them
// the same way, picks the same token for the same draw.
int32_t sample_logits(std::span<float> logits, const SamplingParams& params, std::span<const int32_t> penalized, double u);

// Each distinct token of `history` once, in first-seen order.
std::vector<int32_t> distinct_tokens(std::span<const int32_t> history);

}  // namespace lumen
