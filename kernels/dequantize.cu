// Quantized weights for products of many rows: codes expanded to the activation type so that the
// tensor-core GEMM reads them (CPU reference: weight_row_f32 in engine/backend/cpu_math.cpp), the
// columns of x put in a GPTQ act-order weight's order, and random codes for benchmarks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

// One thread per 32-bit word of codes: eight 4-bit or four 8-bit (integer or FP8) inputs of one row.
template <class T, int kBits, bool kFloat8>
__global__ void dequantize_kernel(const uint32_t* words, const T* scales, const uint8_t* zeros, int64_t group_size, int64_t rows,
                                  int64_t in, T* out) {
    constexpr int P = 32 / kBits;  // codes a word
    const int64_t per_row = in / P, groups = (in + group_size - 1) / group_size;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * per_row; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / per_row, k = (i % per_row) * P, g = r * groups + k / group_size;
        const uint32_t w = words[i];
        const float scale = kFloat8 ? reinterpret_cast<const float*>(scales)[g] : to_f(scales[g]);  // FP8: fp32 scales
        const float zero = kBits == 4 ? float(zeros[g]) : 0.0f;
#pragma unroll
        for (int e = 0; e < P; ++e) {
            float code;
            if constexpr (kFloat8) code = e4m3_to_float(uint8_t(w >> (8 * e)));
            else code = kBits == 4 ? float((w >> (4 * e)) & 0xFu) : float(int8_t(w >> (8 * e)));
            out[r * in + k + e] = from_f<T>((code - zero) * scale);
        }
    }
}

// One block per row: its largest magnitude, then the codes (rounded to nearest even, saturating).
template <class T>
__global__ void __launch_bounds__(256) quantize_rows_fp8_kernel(const T* x, int64_t cols, uint8_t* codes, float* scales) {
    const T* row = x + int64_t(blockIdx.x) * cols;
    float peak = 0;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) peak = fmaxf(peak, fabsf(to_f(row[k])));
    __shared__ float warp_peaks[8];
    for (int offset = 16; offset > 0; offset /= 2) peak = fmaxf(peak, __shfl_xor_sync(0xffffffffu, peak, offset));
    if (threadIdx.x % 32 == 0) warp_peaks[threadIdx.x / 32] = peak;
    __syncthreads();
    peak = 0;
    for (int w = 0; w < int(blockDim.x / 32); ++w) peak = fmaxf(peak, warp_peaks[w]);
    const float scale = peak > 0 ? peak / 448.0f : 1.0f, inverse = 1.0f / scale;
    if (threadIdx.x == 0) scales[blockIdx.x] = scale;
    uint8_t* out = codes + int64_t(blockIdx.x) * cols;
    for (int64_t k = 2 * threadIdx.x; k < cols; k += 2 * blockDim.x) {
        const float2 pair = make_float2(to_f(row[k]) * inverse, to_f(row[k + 1]) * inverse);
        *reinterpret_cast<__nv_fp8x2_storage_t*>(out + k) = __nv_cvt_float2_to_fp8x2(pair, __NV_SATFINITE, __NV_E4M3);
    }
}

template <class T>
__global__ void gather_columns_kernel(const T* x, const int32_t* order, int64_t rows, int64_t cols, T* out) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * cols; i += int64_t(gridDim.x) * blockDim.x)
        out[i] = x[(i / cols) * cols + order[i % cols]];
}

__global__ void random_bytes_kernel(uint64_t* dst, int64_t words, uint64_t seed, uint64_t mask) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < words; i += int64_t(gridDim.x) * blockDim.x) {
        uint64_t z = (seed ^ (uint64_t(i) * 0xD1B54A32D192ED03ull)) + 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        dst[i] = (z ^ (z >> 31)) & mask;
    }
}

unsigned blocks_for(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 8192)); }

}  // namespace

void dequantize(DataType t, const void* w, const QuantizedWeight& q, int64_t rows, int64_t in, void* out, cudaStream_t s) {
    const int64_t words = rows * in * q.bits / 32;
    if (words == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        const auto* codes = static_cast<const uint32_t*>(w);
        const auto* scales = static_cast<const T*>(q.scales);
        const int64_t group = q.bits == 8 && !q.float8 ? in : q.group_size;
        if (q.bits == 4)
            dequantize_kernel<T, 4, false><<<blocks_for(words), 256, 0, s>>>(codes, scales, q.zeros, group, rows, in, static_cast<T*>(out));
        else if (q.float8)
            dequantize_kernel<T, 8, true><<<blocks_for(words), 256, 0, s>>>(codes, scales, q.zeros, group, rows, in, static_cast<T*>(out));
        else
            dequantize_kernel<T, 8, false><<<blocks_for(words), 256, 0, s>>>(codes, scales, q.zeros, group, rows, in, static_cast<T*>(out));
    });
    launched("dequantize");
}

void quantize_rows_fp8(DataType t, const void* x, int64_t rows, int64_t cols, uint8_t* codes, float* scales, cudaStream_t s) {
    if (rows == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        quantize_rows_fp8_kernel<T><<<unsigned(rows), 256, 0, s>>>(static_cast<const T*>(x), cols, codes, scales);
    });
    launched("quantize_rows_fp8");
}

void gather_columns(DataType t, const void* x, const int32_t* order, int64_t rows, int64_t cols, void* out, cudaStream_t s) {
    if (rows * cols == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        gather_columns_kernel<T><<<blocks_for(rows * cols), 256, 0, s>>>(static_cast<const T*>(x), order, rows, cols, static_cast<T*>(out));
    });
    launched("gather_columns");
}

void random_bytes(void* dst, int64_t bytes, uint64_t seed, uint64_t mask, cudaStream_t s) {
    // Whole 8-byte words; callers' buffers are allocations of at least that (the allocator's alignment).
    const int64_t words = (bytes + 7) / 8;
    if (words == 0) return;
    random_bytes_kernel<<<blocks_for(words), 256, 0, s>>>(static_cast<uint64_t*>(dst), words, seed, mask);
    launched("random_bytes");
}

}  // namespace lumen::cuda
