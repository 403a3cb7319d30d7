#include "engine/runtime/sampler.h"

namespace lumen {

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.seed ? params.seed : std::random_device{}()) {}

double Sampler::draw() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history, std::span<const int32_t> reply) {
    const double u = draw();
    return sample_logits(logits, params_, params_.repetition_penalty != 1.0f ? distinct_tokens(history) : std::vector<int32_t>{},
                         lowered_logits(reply, params_), u);
}

}  // namespace lumen
