// Norms and the residual add of the decoder. CPU reference: CpuBackend::rms_norm and ::add
// (engine/backend/cpu_backend.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

// One row per block, every element of it loaded at once into registers (V four-float vectors
// per thread): a decode step's norm is a single block, and the time it takes is the number of
// loads each thread waits for one after another.
template <class T, int V>
__global__ void rms_norm_vector_kernel(const float* x, const T* w, float eps, int64_t cols, T* out) {
    let_next_start();
    wait_for_previous();
    const int64_t row = blockIdx.x, vectors = cols / 4;
    const float4* xr = reinterpret_cast<const float4*>(x + row * cols);
    float4 xv[V];
    float wv[V][4];
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < V; ++j) {
        const int64_t i = threadIdx.x + int64_t(j) * blockDim.x;
        xv[j] = i < vectors ? xr[i] : make_float4(0, 0, 0, 0);
        for (int e = 0; e < 4; ++e) wv[j][e] = i < vectors ? to_f(w[4 * i + e]) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < V; ++j) ss += xv[j].x * xv[j].x + xv[j].y * xv[j].y + xv[j].z * xv[j].z + xv[j].w * xv[j].w;
    const float inv = rsqrtf(block_sum(ss) / float(cols) + eps);
#pragma unroll
    for (int j = 0; j < V; ++j) {
        const int64_t i = threadIdx.x + int64_t(j) * blockDim.x;
        if (i >= vectors) break;
        T* o = out + row * cols + 4 * i;
        o[0] = from_f<T>(wv[j][0] * (xv[j].x * inv));
        o[1] = from_f<T>(wv[j][1] * (xv[j].y * inv));
        o[2] = from_f<T>(wv[j][2] * (xv[j].z * inv));
        o[3] = from_f<T>(wv[j][3] * (xv[j].w * inv));
    }
}

template <class T>
__global__ void rms_norm_kernel(const float* x, const T* w, float eps, int64_t cols, T* out) {
    let_next_start();
    wait_for_previous();
    const int64_t row = blockIdx.x;
    const float* xr = x + row * cols;
    float ss = 0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) ss += xr[i] * xr[i];
    const float inv = rsqrtf(block_sum(ss) / float(cols) + eps);
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) out[row * cols + i] = from_f<T>(to_f(w[i]) * (xr[i] * inv));
}

// Each thread adds N consecutive columns of a row (4 at once where the shapes allow).
template <class T, class TS, int N>
__global__ void add_residual_kernel(float* x, const T* delta, int64_t delta_rows, int64_t rows, int64_t cols, const TS* column_scale) {
    let_next_start();
    wait_for_previous();
    const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * N;
    if (c >= cols) return;
    float scale[N];
#pragma unroll
    for (int i = 0; i < N; ++i) scale[i] = column_scale ? to_f(column_scale[c + i]) : 1.0f;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const int64_t from = r < delta_rows ? r : r % delta_rows;
        if constexpr (N == 4) {
            const Four<T> d = *reinterpret_cast<const Four<T>*>(delta + from * cols + c);
            float4& xr = *reinterpret_cast<float4*>(x + r * cols + c);
            float4 v = xr;
            v.x += to_f(d.v[0]) * scale[0], v.y += to_f(d.v[1]) * scale[1], v.z += to_f(d.v[2]) * scale[2], v.w += to_f(d.v[3]) * scale[3];
            xr = v;
        } else {
            x[r * cols + c] += to_f(delta[from * cols + c]) * scale[0];
        }
    }
}


}  // namespace

void rms_norm(DataType t, const float* x, const void* w, float eps, int64_t rows, int64_t cols, void* out, cudaStream_t s) {
    if (rows == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        const auto* wt = static_cast<const T*>(w);
        auto* o = static_cast<T*>(out);
        // Rows of up to 16,384 in registers (256 threads, up to 16 vectors each).
        const int64_t per_thread = (cols / 4 + 255) / 256;
        if (cols % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && per_thread <= 16) {
            auto run = [&](auto v) {
                launch_early(rms_norm_vector_kernel<T, decltype(v)::value>, unsigned(rows), 256, 0, s, x, wt, eps, cols, o);
            };
            if (per_thread <= 1) run(std::integral_constant<int, 1>{});
            else if (per_thread <= 2) run(std::integral_constant<int, 2>{});
            else if (per_thread <= 4) run(std::integral_constant<int, 4>{});
            else if (per_thread <= 8) run(std::integral_constant<int, 8>{});
            else run(std::integral_constant<int, 16>{});
        } else {
            launch_early(rms_norm_kernel<T>, unsigned(rows), 512, 0, s, x, wt, eps, cols, o);
        }
    });
    launched("rms_norm");
}

void add_residual(DataType t, float* x, const void* delta, int64_t delta_rows, int64_t rows, int64_t cols, DataType scale_type,
                  const void* column_scale, cudaStream_t s) {
    const int64_t n = rows * cols;
    if (n == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        dispatch(scale_type, [&](auto scale_tag) {
            using TS = decltype(scale_tag);
            const auto* d = static_cast<const T*>(delta);
            const auto* scale = static_cast<const TS*>(column_scale);
            if (fours<float>(x, cols, cols) && fours<T>(delta, cols, cols) && (!scale || fours<TS>(scale, cols, cols)))
                launch_early(add_residual_kernel<T, TS, 4>, matrix_grid(rows, cols / 4, 256), 256, 0, s, x, d, delta_rows, rows, cols,
                             scale);
            else
                launch_early(add_residual_kernel<T, TS, 1>, matrix_grid(rows, cols, 256), 256, 0, s, x, d, delta_rows, rows, cols,
                             scale);
        });
    });
    launched("add_residual");
}

}  // namespace lumen::cuda
