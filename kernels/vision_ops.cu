// Kernels of the vision encoders and projectors: row norms with any input and output type,
// activations, unmasked attention within each image, row gathers and conversions.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/device_common.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

// Row norms, a block per row (out may be x: every value is read before the block's last reduction
// and written after it). Which kernel is faster depends on the number of rows (measured on H100).
constexpr int64_t kManyRows = 4096;

// Few rows (an image of one tile): 256 threads a row, the row read once per statistic.
template <class TIn, class TOut, class TW>
__global__ void norm_rows_wide_kernel(const TIn* x, int64_t x_stride, TOut* out, int64_t out_stride, const TW* w, const TW* bias,
                                      float eps, bool rms, int64_t cols) {
    const TIn* xr = x + int64_t(blockIdx.x) * x_stride;
    TOut* o = out + int64_t(blockIdx.x) * out_stride;
    float mean = 0.0f;
    if (!rms) {
        float sum = 0.0f;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) sum += to_f(xr[i]);
        mean = block_sum(sum) / float(cols);
    }
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        const float d = to_f(xr[i]) - mean;
        ss += d * d;
    }
    const float inv = rsqrtf(block_sum(ss) / float(cols) + eps);
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        float r = (to_f(xr[i]) - mean) * inv * to_f(w[i]);
        if (bias) r += to_f(bias[i]);
        o[i] = from_f<TOut>(r);
    }
}

// Many rows (images of many tiles): fewer threads a row, each keeping its values in registers.
constexpr int kNormValues = 16;

template <class TIn, class TOut, class TW>
__global__ void norm_rows_kernel(const TIn* x, int64_t x_stride, TOut* out, int64_t out_stride, const TW* w, const TW* bias,
                                 float eps, bool rms, int64_t cols) {
    const TIn* xr = x + int64_t(blockIdx.x) * x_stride;
    TOut* o = out + int64_t(blockIdx.x) * out_stride;
    float v[kNormValues];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kNormValues; ++k) {
        const int64_t i = int64_t(k) * blockDim.x + threadIdx.x;
        v[k] = i < cols ? to_f(xr[i]) : 0.0f;
        sum += v[k];
    }
    const float mean = rms ? 0.0f : block_sum(sum) / float(cols);
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < kNormValues; ++k) {
        const int64_t i = int64_t(k) * blockDim.x + threadIdx.x;
        const float d = i < cols ? v[k] - mean : 0.0f;
        ss += d * d;
    }
    const float inv = rsqrtf(block_sum(ss) / float(cols) + eps);
#pragma unroll
    for (int k = 0; k < kNormValues; ++k) {
        const int64_t i = int64_t(k) * blockDim.x + threadIdx.x;
        if (i < cols) {
            float r = (v[k] - mean) * inv * to_f(w[i]);
            if (bias) r += to_f(bias[i]);
            o[i] = from_f<TOut>(r);
        }
    }
}

__device__ __forceinline__ float activation(float v, Activation kind) {
    return kind == Activation::Gelu ? 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)) : v / (1.0f + __expf(-1.702f * v));
}

// Each thread takes N consecutive values of a row (N = kVector<T> when vectorized, else 1).
template <class T, int N>
__global__ void activate_kernel(T* x, int64_t rows, int64_t cols, int64_t stride, Activation kind) {
    const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * N;
    if (c >= cols) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        T* p = x + r * stride + c;
        if constexpr (N == 1) {
            *p = from_f<T>(activation(to_f(*p), kind));
        } else {
            Vector<T> e = *reinterpret_cast<const Vector<T>*>(p);
#pragma unroll
            for (int i = 0; i < N; ++i) e.v[i] = from_f<T>(activation(to_f(e.v[i]), kind));
            *reinterpret_cast<Vector<T>*>(p) = e;
        }
    }
}

// For fp32 and the head sizes the tensor-core kernel does not take: one thread per query row of
// one head; the keys and values of its image pass through shared memory a tile at a time, with
// an online softmax per tile.
constexpr int kQueries = 64;
constexpr int kKeys = 32;

template <class T, int D>
__global__ void __launch_bounds__(kQueries) attention_full_kernel(const T* qkv, int32_t heads, int64_t group_rows, T* out, float scale) {
    __shared__ float k_tile[kKeys][D];
    __shared__ float v_tile[kKeys][D];
    const int64_t width = int64_t(heads) * D;
    const int64_t group_first = int64_t(blockIdx.z) * group_rows;
    const int h = blockIdx.y;
    const int64_t q_index = int64_t(blockIdx.x) * kQueries + threadIdx.x;
    const bool active = q_index < group_rows;
    float q[D], acc[D];
    if (active) {
        const T* qp = qkv + (group_first + q_index) * 3 * width + int64_t(h) * D;
        for (int d = 0; d < D; ++d) q[d] = to_f(qp[d]) * scale;
    }
    for (int d = 0; d < D; ++d) acc[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int64_t k0 = 0; k0 < group_rows; k0 += kKeys) {
        const int n = group_rows - k0 < kKeys ? int(group_rows - k0) : kKeys;
        __syncthreads();
        for (int e = threadIdx.x; e < n * D; e += kQueries) {
            const int j = e / D, d = e % D;
            const T* row = qkv + (group_first + k0 + j) * 3 * width + int64_t(h) * D;
            k_tile[j][d] = to_f(row[width + d]);
            v_tile[j][d] = to_f(row[2 * width + d]);
        }
        __syncthreads();
        if (!active) continue;
        float s[kKeys];
        float tile_max = -INFINITY;
        for (int j = 0; j < n; ++j) {
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot += q[d] * k_tile[j][d];
            s[j] = dot;
            tile_max = fmaxf(tile_max, dot);
        }
        const float m_new = fmaxf(m, tile_max);
        const float correction = __expf(m - m_new);
        l *= correction;
        for (int d = 0; d < D; ++d) acc[d] *= correction;
        for (int j = 0; j < n; ++j) {
            const float p = __expf(s[j] - m_new);
            l += p;
            for (int d = 0; d < D; ++d) acc[d] += p * v_tile[j][d];
        }
        m = m_new;
    }
    if (!active) return;
    T* o = out + (group_first + q_index) * width + int64_t(h) * D;
    const float inv = 1.0f / l;
    for (int d = 0; d < D; ++d) o[d] = from_f<T>(acc[d] * inv);
}

template <class TIn, class TOut>
__global__ void convert_rows_kernel(const TIn* src, int64_t src_stride, TOut* dst, int64_t dst_stride, int64_t rows, int64_t cols,
                                    const int32_t* index) {
    const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const int64_t from = index ? index[r] : r;
        dst[r * dst_stride + c] = from_f<TOut>(to_f(src[from * src_stride + c]));
    }
}

// Calls f(TA{}, TB{}) with the C++ types of a and b.
template <class F>
void dispatch2(DataType a, DataType b, F&& f) {
    dispatch(a, [&](auto ta) { dispatch(b, [&](auto tb) { f(ta, tb); }); });
}

}  // namespace

void norm_rows(DataType x_type, const void* x, int64_t x_stride, DataType out_type, void* out, int64_t out_stride, DataType w_type,
               const void* w, const void* bias, float eps, bool rms, int64_t rows, int64_t cols, cudaStream_t s) {
    if (rows == 0) return;
    const bool many = rows >= kManyRows && cols <= 1024 * kNormValues;
    const unsigned threads = unsigned(std::clamp<int64_t>(((cols + kNormValues - 1) / kNormValues + 31) / 32 * 32, 32, 1024));
    dispatch2(x_type, out_type, [&](auto ti, auto to) {
        using TI = decltype(ti);
        using TO = decltype(to);
        dispatch(w_type, [&](auto tw) {
            using TW = decltype(tw);
            const auto* xi = static_cast<const TI*>(x);
            auto* o = static_cast<TO*>(out);
            const auto *wp = static_cast<const TW*>(w), *bp = static_cast<const TW*>(bias);
            if (!many)
                norm_rows_wide_kernel<TI, TO, TW><<<unsigned(rows), 256, 0, s>>>(xi, x_stride, o, out_stride, wp, bp, eps, rms, cols);
            else
                norm_rows_kernel<TI, TO, TW><<<unsigned(rows), threads, 0, s>>>(xi, x_stride, o, out_stride, wp, bp, eps, rms, cols);
        });
    });
    launched("norm_rows");
}

void activate(DataType t, void* x, int64_t rows, int64_t cols, int64_t stride, Activation kind, cudaStream_t s) {
    const int64_t n = rows * cols;
    if (n == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        if (vectorizable<T>(x, cols, stride))
            activate_kernel<T, kVector<T>><<<matrix_grid(rows, cols / kVector<T>, 256), 256, 0, s>>>(static_cast<T*>(x), rows, cols,
                                                                                                     stride, kind);
        else
            activate_kernel<T, 1><<<matrix_grid(rows, cols, 256), 256, 0, s>>>(static_cast<T*>(x), rows, cols, stride, kind);
    });
    launched("activate");
}

void attention_full(DataType t, const void* qkv, int32_t heads, int32_t head_dim, int64_t rows, int64_t group_rows, void* out,
                    cudaStream_t s) {
    if (rows == 0) return;
    if (group_rows <= 0 || rows % group_rows != 0) throw std::runtime_error("attention_full: groups do not tile the rows");
    if (flash_attention_full(t, qkv, heads, head_dim, rows, group_rows, out, s)) return;
    const dim3 grid(unsigned((group_rows + kQueries - 1) / kQueries), unsigned(heads), unsigned(rows / group_rows));
    const float scale = 1.0f / sqrtf(float(head_dim));
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        const auto* in = static_cast<const T*>(qkv);
        auto* o = static_cast<T*>(out);
        switch (head_dim) {
        case 16: attention_full_kernel<T, 16><<<grid, kQueries, 0, s>>>(in, heads, group_rows, o, scale); break;
        case 32: attention_full_kernel<T, 32><<<grid, kQueries, 0, s>>>(in, heads, group_rows, o, scale); break;
        case 64: attention_full_kernel<T, 64><<<grid, kQueries, 0, s>>>(in, heads, group_rows, o, scale); break;
        case 128: attention_full_kernel<T, 128><<<grid, kQueries, 0, s>>>(in, heads, group_rows, o, scale); break;
        default: throw std::runtime_error("attention_full: head_dim " + std::to_string(head_dim) + " is not supported (16, 32, 64, 128)");
        }
    });
    launched("attention_full");
}

void convert_rows(DataType src_type, const void* src, int64_t src_stride, DataType dst_type, void* dst, int64_t dst_stride,
                  int64_t rows, int64_t cols, const int32_t* index, cudaStream_t s) {
    const int64_t n = rows * cols;
    if (n == 0) return;
    dispatch2(src_type, dst_type, [&](auto ts, auto td) {
        using TS = decltype(ts);
        using TD = decltype(td);
        convert_rows_kernel<TS, TD><<<matrix_grid(rows, cols, 256), 256, 0, s>>>(static_cast<const TS*>(src), src_stride,
                                                                                 static_cast<TD*>(dst), dst_stride, rows, cols, index);
    });
    launched("convert_rows");
}

}  // namespace lumen::cuda
