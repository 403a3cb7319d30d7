#include "engine/util/dtype.h"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace lumen {
namespace {

struct DTypeInfo {
    DType type;
    std::string_view name;
    std::size_t size;
};

constexpr std::array<DTypeInfo, 12> kTypes{{
    {DType::F64, "F64", 8},     {DType::F32, "F32", 4},   {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},   {DType::I64, "I64", 8},   {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},     {DType::I8, "I8", 1},     {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
}};

const DTypeInfo& info(DType t) { return kTypes[std::size_t(t)]; }

}  // namespace

std::optional<DType> parse_safetensors_dtype(std::string_view name) {
    for (const auto& t : kTypes)
        if (t.name == name) return t.type;
    return std::nullopt;
}

std::string_view dtype_name(DType t) { return info(t).name; }
std::size_t dtype_size(DType t) { return info(t).size; }

float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal: normalise
        exp = 113;
        while ((mant & 0x400u) == 0) {
            mant <<= 1;
            --exp;
        }
        bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
    return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    const uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
    if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow (after rounding) -> inf
    if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        if (abs < 0x33000000u) return sign;  // rounds to zero
        const uint32_t exp = abs >> 23;
        const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - exp;  // 14..24
        uint32_t half = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1);
        const uint32_t midpoint = 1u << (shift - 1);
        if (rem > midpoint || (rem == midpoint && (half & 1u))) ++half;
        return uint16_t(sign | half);
    }
    uint32_t bits = abs - (112u << 23);
    bits += 0xfffu + ((bits >> 13) & 1u);  // round to nearest even
    return uint16_t(sign | (bits >> 13));
}

float e4m3_to_f32(uint8_t code) {
    const int exp = (code >> 3) & 15, mant = code & 7;
    if (exp == 15 && mant == 7) return std::numeric_limits<float>::quiet_NaN();
    // Exponent field 0: subnormal, mant · 2^-9; otherwise (8 + mant) · 2^(exp - 10).
    const float magnitude = exp == 0 ? std::ldexp(float(mant), -9) : std::ldexp(float(8 + mant), exp - 10);
    return code & 0x80 ? -magnitude : magnitude;
}

uint8_t f32_to_e4m3(float f) {
    const uint8_t sign = std::signbit(f) ? 0x80 : 0;
    const float a = std::fabs(f);
    if (std::isnan(f)) return uint8_t(sign | 0x7F);
    if (a >= 448.0f) return uint8_t(sign | 0x7E);
    int e;
    std::frexp(a, &e);  // a = m · 2^e, m in [0.5, 1): the leading bit is 2^(e - 1)
    // Steps of 2^(e - 4) among normals, 2^-9 among subnormals (below 2^-6); the quotient is exact,
    // nearbyint rounds it to nearest even. A carry into the next binade lands on the right code
    // because exponent and mantissa are adjacent fields.
    const int step = a < 0.015625f ? -9 : e - 4;
    const int q = int(std::nearbyint(std::ldexp(a, -step)));
    const int code = step == -9 ? q : ((step + 10) << 3) + (q - 8);
    return uint8_t(sign | std::min(code, 0x7E));
}

void to_f32(const std::byte* src, DType from, std::size_t n, float* dst) {
    if (from == DType::F32) {
        std::memcpy(dst, src, n * 4);
        return;
    }
    for (std::size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = from == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
}

}  // namespace lumen
