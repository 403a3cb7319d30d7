#pragma once
// A KV cache of 8- or 4-bit codes (KvLayout::bits): where a row's codes and (scale, zero) are, how a
// warp quantizes a row into them and how codes become values. CPU reference: engine/backend/kv_quant.cpp.
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/device_common.cuh"

namespace lumen::cuda::detail {

__device__ __forceinline__ int64_t kv_row_bytes(const KvLayout& kv) { return int64_t(kv.head_dim) * kv.bits / 8; }

// The (layer, k|v, head) part of a block: block_size rows of codes, then their (scale, zero) pairs.
// Byte: uint8_t, or const uint8_t where the pool is only read.
template <class Byte>
__device__ __forceinline__ Byte* kv_part(Byte* pool, const KvLayout& kv, int32_t block, int32_t layer, int32_t which, int32_t head) {
    const int64_t part = int64_t(kv.block_size) * (kv_row_bytes(kv) + 4);
    return pool + (((int64_t(block) * kv.num_layers + layer) * 2 + which) * kv.num_kv_heads + head) * part;
}
template <class Byte>
__device__ __forceinline__ auto kv_params(Byte* part, const KvLayout& kv) {
    using Pair = std::conditional_t<std::is_const_v<Byte>, const __half2, __half2>;
    return reinterpret_cast<Pair*>(part + kv.block_size * kv_row_bytes(kv));
}

__device__ __forceinline__ float warp_min(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// One warp stores the D values at x (D a multiple of 8 up to 256; lane i takes elements 8i..8i+7)
// as codes of `bits` with their scale and zero, rounded to fp16 before the codes are taken.
template <class T>
__device__ __forceinline__ void quantize_row(const T* x, int32_t D, int32_t bits, uint8_t* codes, __half2* params, int lane) {
    const bool mine = 8 * lane < D;
    float v[8], lo = INFINITY, hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        v[j] = mine ? to_f(x[8 * lane + j]) : 0.0f;
        if (mine) lo = fminf(lo, v[j]), hi = fmaxf(hi, v[j]);
    }
    lo = warp_min(lo), hi = warp_max(hi);
    const float top = float((1 << bits) - 1);
    const __half scale_h = __float2half_rn(fminf(fmaxf((hi - lo) / top, -65504.0f), 65504.0f));
    const __half zero_h = __float2half_rn(fminf(fmaxf(lo, -65504.0f), 65504.0f));
    const float scale = __half2float(scale_h), zero = __half2float(zero_h);
    if (lane == 0) *params = __halves2half2(scale_h, zero_h);
    if (!mine) return;
    uint32_t q[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) q[j] = scale > 0.0f ? uint32_t(fminf(fmaxf(rintf((v[j] - zero) / scale), 0.0f), top)) : 0u;
    if (bits == 8) {
        *reinterpret_cast<uint2*>(codes + 8 * lane) = make_uint2(q[0] | q[1] << 8 | q[2] << 16 | q[3] << 24, q[4] | q[5] << 8 | q[6] << 16 | q[7] << 24);
    } else {
        uint32_t w = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) w |= q[j] << (4 * j);
        *reinterpret_cast<uint32_t*>(codes + 4 * lane) = w;
    }
}

// Code e of a 32-bit word of codes, as a float: exponent bits put above it make 2^23 + code, exact.
template <int BITS>
__device__ __forceinline__ float code_at(uint32_t w, int e) {
    if constexpr (BITS == 8) return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u + e)) - 8388608.0f;
    else return __uint_as_float(((w >> (4 * e)) & 0xFu) | 0x4B000000u) - 8388608.0f;
}

// Eight codes of a row (8 bits: two words; 4 bits: one) to floats.
template <int BITS>
__device__ __forceinline__ void eight_codes(const uint8_t* at, float (&out)[8]) {
    if constexpr (BITS == 8) {
        const uint2 w = *reinterpret_cast<const uint2*>(at);
#pragma unroll
        for (int e = 0; e < 4; ++e) out[e] = code_at<8>(w.x, e), out[4 + e] = code_at<8>(w.y, e);
    } else {
        const uint32_t w = *reinterpret_cast<const uint32_t*>(at);
#pragma unroll
        for (int e = 0; e < 8; ++e) out[e] = code_at<4>(w, e);
    }
}

}  // namespace lumen::cuda::detail
