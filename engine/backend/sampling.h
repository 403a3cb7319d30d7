#pragma once
// The token choice every backend makes from logits, with the processors Hugging Face's generate
// applies, in its order: repetition penalty, then temperature, top-k, top-p and min-p; OpenAI's
// presence and frequency penalties come right after the repetition penalty, as in vLLM. This is
// the reference the CUDA backend's sampling is checked against.
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
    float presence_penalty = 0.0f;   // subtracted from the logit of each token the reply holds
    float frequency_penalty = 0.0f;  // subtracted once for each time the reply holds the token
    uint64_t seed = 0;               // 0: a fresh random seed

    bool greedy() const { return temperature <= 0.0f || top_k == 1; }
    bool penalizes() const { return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f; }
};

// A logit lowered by the presence and frequency penalties.
struct LoweredLogit {
    int32_t id = 0;
    float by = 0;
};

// A token's log-probability under the model: its own distribution at that step, before the
// sampling settings (temperature, penalties, filters) change it, as vLLM reports by default.
struct TokenLogprob {
    int32_t id = 0;
    float logprob = 0;
};

// Turns a row of logits into log-probabilities (in place) and returns the `n` most likely tokens'
// (ties: the lower id first).
std::vector<TokenLogprob> log_softmax_top(std::span<float> row, int32_t n);

// One token from one row of logits (modified) with the processors of `params`; `penalized` holds
// each distinct earlier token of the sequence once (for the repetition penalty), `lowered` what
// the presence and frequency penalties take off (lowered_logits), `u` is a uniform draw in [0, 1).
// The kept tokens are walked in id order, so that the CUDA backend, walking them the same way,
// picks the same token for the same draw.
int32_t sample_logits(std::span<float> logits, const SamplingParams& params, std::span<const int32_t> penalized,
                      std::span<const LoweredLogit> lowered, double u);

// Each distinct token of `history` once, in first-seen order.
std::vector<int32_t> distinct_tokens(std::span<const int32_t> history);
// What the presence and frequency penalties take off each token of the reply so far: presence +
// frequency x its count, each distinct token once, in first-seen order (empty without them).
std::vector<LoweredLogit> lowered_logits(std::span<const int32_t> reply, const SamplingParams& params);

}  // namespace lumen
