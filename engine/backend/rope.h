#pragma once
// Rotary position embeddings as the backends apply them, with the scalings configs ask for.
#include <cstdint>

namespace lumen {

struct RopeScaling {
    enum class Type { None, Linear, Dynamic };
    Type type = Type::None;
    double factor = 1.0;
};

struct RopeConfig {
    int32_t head_dim = 0;  // rotated dimensions (the whole head)
    double theta = 10000.0;
    RopeScaling scaling;
    int64_t max_position_embeddings = 0;
};

// The RoPE base a token uses: dynamic NTK scaling raises it once the sequence is longer than the
// trained context, with transformers' formula.
double rope_base(const RopeConfig& rope, int32_t length);

}  // namespace lumen
