#include "engine/backend/kv_quant.h"

#include <algorithm>
#include <cmath>

#include "engine/util/dtype.h"

namespace lumen {

namespace {
// fp16 holds up to 65504: larger scales or zeros would become infinities.
uint16_t to_f16(float v) { return f32_to_f16(std::clamp(v, -65504.0f, 65504.0f)); }
}  // namespace

void quantize_kv_row(const float* x, int32_t n, int32_t bits, uint8_t* codes, uint16_t* params) {
    const auto [lo, hi] = std::minmax_element(x, x + n);
    const int32_t top = (1 << bits) - 1;
    params[0] = to_f16((*hi - *lo) / float(top));
    params[1] = to_f16(*lo);
    const float scale = f16_to_f32(params[0]), zero = f16_to_f32(params[1]);
    auto code = [&](int32_t i) {
        if (!(scale > 0)) return 0;
        return int(std::clamp(std::nearbyint((x[i] - zero) / scale), 0.0f, float(top)));
    };
    if (bits == 8) {
        for (int32_t i = 0; i < n; ++i) codes[i] = uint8_t(code(i));
    } else {
        for (int32_t i = 0; i < n; i += 2) codes[i / 2] = uint8_t(code(i) | code(i + 1) << 4);
    }
}

void dequantize_kv_row(const uint8_t* codes, const uint16_t* params, int32_t n, int32_t bits, float* out) {
    const float scale = f16_to_f32(params[0]), zero = f16_to_f32(params[1]);
    for (int32_t i = 0; i < n; ++i) {
        const int q = bits == 8 ? codes[i] : (codes[i / 2] >> (4 * (i % 2))) & 15;
        out[i] = float(q) * scale + zero;
    }
}

}  // namespace lumen
