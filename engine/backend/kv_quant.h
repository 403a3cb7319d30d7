#pragma once
// One key or value row of one head in a KV cache of 8- or 4-bit codes (KvCacheShape::bits):
// asymmetric over the row, scale = (max - min) / (2^bits - 1) and zero = min, both rounded to fp16
// first so that the codes are taken against the values they will be read back with. The CUDA
// kernels (kernels/kv_quant.cuh) do the same arithmetic.
#include <cstdint>

namespace lumen {

// codes: n · bits / 8 bytes; params: the (scale, zero) fp16 pair.
void quantize_kv_row(const float* x, int32_t n, int32_t bits, uint8_t* codes, uint16_t* params);
void dequantize_kv_row(const uint8_t* codes, const uint16_t* params, int32_t n, int32_t bits, float* out);

}  // namespace lumen
