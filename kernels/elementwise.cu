// Row-wise and element-wise ops: the embedding gather, SiLU·up, gathering rows, type conversion
// and seeded random fills. CPU references: CpuBackend::embed, ::silu_mul, ::gather_logit_rows, ::read
// and ::random_weight (engine/backend/cpu_backend.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

template <class T>
__global__ void embed_kernel(const T* table, int64_t hidden, const int32_t* ids, float* out) {
    let_next_start();
    wait_for_previous();
    const int64_t row = blockIdx.x;
    const T* src = table + int64_t(ids[row]) * hidden;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) out[row * hidden + i] = to_f(src[i]);
}

// Each thread takes N consecutive columns of a row (N = kVector<T> when vectorized, else 1).
template <class T, int N>
__global__ void silu_mul_kernel(const T* gate_up, int64_t rows, int64_t inter, T* out) {
    let_next_start();
    wait_for_previous();
    const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * N;
    if (c >= inter) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const T* g = gate_up + r * 2 * inter + c;
        if constexpr (N == 1) {
            out[r * inter + c] = from_f<T>(silu_times(to_f(g[0]), to_f(g[inter])));
        } else {
            const Vector<T> gv = *reinterpret_cast<const Vector<T>*>(g), uv = *reinterpret_cast<const Vector<T>*>(g + inter);
            Vector<T> o;
#pragma unroll
            for (int i = 0; i < N; ++i) o.v[i] = from_f<T>(silu_times(to_f(gv.v[i]), to_f(uv.v[i])));
            *reinterpret_cast<Vector<T>*>(out + r * inter + c) = o;
        }
    }
}

__global__ void gather_rows_kernel(const float* x, int64_t cols, const int32_t* rows, float* out) {
    let_next_start();
    wait_for_previous();
    const int64_t r = blockIdx.x;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) out[r * cols + i] = x[int64_t(rows[r]) * cols + i];
}

template <class T>
__global__ void to_f32_kernel(const T* src, int64_t n, float* dst) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = to_f(src[i]);
}

template <class T>
__global__ void random_fill_kernel(T* dst, int64_t n, uint64_t seed, float center, float scale) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        uint64_t z = (seed ^ (uint64_t(i) * 0xD1B54A32D192ED03ull)) + 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const float u = float(z >> 40) * (1.0f / 16777216.0f);
        dst[i] = from_f<T>(center + scale * (u - 0.5f));
    }
}


}  // namespace

void embed(DataType t, const void* table, int64_t hidden, const int32_t* ids, int32_t n, float* out, cudaStream_t s) {
    if (n == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        launch_early(embed_kernel<T>, n, 256, 0, s, static_cast<const T*>(table), hidden, ids, out);
    });
    launched("embed");
}

void silu_mul(DataType t, const void* gate_up, int64_t rows, int64_t inter, void* out, cudaStream_t s) {
    const int64_t n = rows * inter;
    if (n == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        const auto* in = static_cast<const T*>(gate_up);
        auto* o = static_cast<T*>(out);
        if (vectorizable<T>(gate_up, inter, 2 * inter) && vectorizable<T>(out, inter, inter))
            launch_early(silu_mul_kernel<T, kVector<T>>, matrix_grid(rows, inter / kVector<T>, 128), 128, 0, s, in, rows, inter,
                         o);
        else
            launch_early(silu_mul_kernel<T, 1>, matrix_grid(rows, inter, 128), 128, 0, s, in, rows, inter, o);
    });
    launched("silu_mul");
}

void gather_rows(const float* x, int64_t cols, const int32_t* rows, int32_t n, float* out, cudaStream_t s) {
    if (n == 0) return;
    launch_early(gather_rows_kernel, n, 256, 0, s, x, cols, rows, out);
    launched("gather_rows");
}

void to_f32(DataType t, const void* src, int64_t n, float* dst, cudaStream_t s) {
    if (n == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        to_f32_kernel<T><<<blocks_for(n, 256), 256, 0, s>>>(static_cast<const T*>(src), n, dst);
    });
    launched("to_f32");
}

void random_fill(DataType t, void* dst, int64_t n, uint64_t seed, float center, float scale, cudaStream_t s) {
    if (n == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        random_fill_kernel<T><<<4096, 256, 0, s>>>(static_cast<T*>(dst), n, seed, center, scale);
    });
    launched("random_fill");
}

}  // namespace lumen::cuda
