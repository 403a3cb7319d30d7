// Kernels of the vision encoders and projectors: row norms with any input and output type,
// activations, layer scale, unmasked attention within each image, row gathers and conversions.
#include <stdexcept>
#include <string>

#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

template <class TIn, class TOut, class TW>
__global__ void norm_rows_kernel(const TIn* x, int64_t x_stride, TOut* out, int64_t out_stride, const TW* w, const TW* bias,
                                 float eps, bool rms, int64_t cols) {
    const TIn* xr = x + int64_t(blockIdx.x) * x_stride;
    TOut* o = out + int64_t(blockIdx.x) * out_stride;
    float mean = 0.0f;
    if (!rms) {
        float s = 0.0f;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) s += to_f(xr[i]);
        mean = block_sum(s) / float(cols);
    }
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        const float d = to_f(xr[i]) - mean;
        ss += d * d;
    }
    const float inv = rsqrtf(block_sum(ss) / float(cols) + eps);
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = (to_f(xr[i]) - mean) * inv * to_f(w[i]);
        if (bias) v += to_f(bias[i]);
        o[i] = from_f<TOut>(v);
    }
}

template <class T>
__global__ void activate_kernel(T* x, int64_t rows, int64_t cols, int64_t stride, Activation kind) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    T* p = x + (i / cols) * stride + i % cols;
    const float v = to_f(*p);
    *p = from_f<T>(kind == Activation::Gelu ? 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)) : v / (1.0f + __expf(-1.702f * v)));
}

template <class T, class TS>
__global__ void scale_columns_kernel(T* x, int64_t rows, int64_t cols, int64_t stride, const TS* scale) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    T* p = x + (i / cols) * stride + i % cols;
    *p = from_f<T>(to_f(*p) * to_f(scale[i % cols]));
}

// One thread per query row of one head: the keys and values of its image pass through shared
// memory a tile at a time, with an online softmax per tile.
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
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    const int64_t r = i / cols, c = i % cols;
    const int64_t from = index ? index[r] : r;
    dst[r * dst_stride + c] = from_f<TOut>(to_f(src[from * src_stride + c]));
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
    dispatch2(x_type, out_type, [&](auto ti, auto to) {
        using TI = decltype(ti);
        using TO = decltype(to);
        dispatch(w_type, [&](auto tw) {
            using TW = decltype(tw);
            norm_rows_kernel<TI, TO, TW><<<unsigned(rows), 256, 0, s>>>(static_cast<const TI*>(x), x_stride, static_cast<TO*>(out),
                                                                        out_stride, static_cast<const TW*>(w),
                                                                        static_cast<const TW*>(bias), eps, rms, cols);
        });
    });
    launched("norm_rows");
}

void activate(DataType t, void* x, int64_t rows, int64_t cols, int64_t stride, Activation kind, cudaStream_t s) {
    const int64_t n = rows * cols;
    if (n == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        activate_kernel<T><<<blocks_for(n, 256), 256, 0, s>>>(static_cast<T*>(x), rows, cols, stride, kind);
    });
    launched("activate");
}

void scale_columns(DataType t, void* x, int64_t rows, int64_t cols, int64_t stride, DataType scale_type, const void* scale,
                   cudaStream_t s) {
    const int64_t n = rows * cols;
    if (n == 0) return;
    dispatch2(t, scale_type, [&](auto tx, auto ts) {
        using T = decltype(tx);
        using TS = decltype(ts);
        scale_columns_kernel<T, TS><<<blocks_for(n, 256), 256, 0, s>>>(static_cast<T*>(x), rows, cols, stride,
                                                                       static_cast<const TS*>(scale));
    });
    launched("scale_columns");
}

void attention_full(DataType t, const void* qkv, int32_t heads, int32_t head_dim, int64_t rows, int64_t group_rows, void* out,
                    cudaStream_t s) {
    if (rows == 0) return;
    if (group_rows <= 0 || rows % group_rows != 0) throw std::runtime_error("attention_full: groups do not tile the rows");
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
        convert_rows_kernel<TS, TD><<<blocks_for(n, 256), 256, 0, s>>>(static_cast<const TS*>(src), src_stride, static_cast<TD*>(dst),
                                                                       dst_stride, rows, cols, index);
    });
    launched("convert_rows");
}

}  // namespace lumen::cuda
