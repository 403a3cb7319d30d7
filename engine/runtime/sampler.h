#pragma once
// A sequence's own random stream over the backend's token choice (sample_logits).
#include <cstdint>
#include <random>
#include <span>

#include "engine/backend/sampling.h"

namespace lumen {

// A sequence's sampling: its parameters and its own random stream.
class Sampler {
public:
    explicit Sampler(const SamplingParams& params);

    // `logits` is modified. `history` is every token of the sequence so far (prompt and reply),
    // which the repetition penalty looks at; `reply` its generated part, which the presence and
    // frequency penalties look at.
    int32_t sample(std::span<float> logits, std::span<const int32_t> history, std::span<const int32_t> reply = {});
    // The next uniform value in [0, 1) of this sequence's stream.
    double draw();

    const SamplingParams& params() const { return params_; }
    // True when the next token is simply the largest logit (greedy, no penalties).
    bool argmax_only() const { return params_.greedy() && !params_.penalizes(); }

private:
    SamplingParams params_;
    std::mt19937_64 rng_;
};

}  // namespace lumen
