#pragma once
// Element types of stored tensors and the conversions the CPU reference needs.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace lumen {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2 };

std::optional<DType> parse_safetensors_dtype(std::string_view name);
inline bool is_float_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }
std::string_view dtype_name(DType t);
std::size_t dtype_size(DType t);

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
    uint32_t u = std::bit_cast<uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// FP8 E4M3 as the OCP format defines it ("e4m3fn": no infinities; 0x7F and 0xFF are NaN; the
// largest finite value is 448).
float e4m3_to_f32(uint8_t code);
// Round to nearest even; magnitudes past 448 saturate to ±448 (checkpoint writers clamp before
// they cast, and so do we); NaN stays NaN.
uint8_t f32_to_e4m3(float f);

// n stored values of a float type (F32, F16 or BF16; others are read as F16) to fp32.
void to_f32(const std::byte* src, DType from, std::size_t n, float* dst);

}  // namespace lumen
