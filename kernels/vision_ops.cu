// Kernels of the vision encoders and projectors: row norms with any input and output type,
// activations, unmasked attention within each image, row gathers and conversions.
#include <algorithm>
#include <string>
#include <type_traits>

#include "engine/util/error.h"
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

// The residual add and the next norm of a vision layer: x += delta · scale, then out = norm(x),
// a warp per row holding its V four-value pieces in registers (x is read and written once).
template <class T, int V>
__global__ void __launch_bounds__(128) add_norm_rows_kernel(float* x, const T* delta, const T* scale, const T* w, const T* bias, float eps,
                                                            bool rms, int64_t rows, int64_t cols, T* out) {
    const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
    if (row >= rows) return;
    const int lane = threadIdx.x & 31;
    const int64_t pieces = cols / 4;
    float4* xr = reinterpret_cast<float4*>(x + row * cols);
    const auto* dr = reinterpret_cast<const Four<T>*>(delta + row * cols);
    float v[V][4];
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < V; ++j) {
        const int64_t i = lane + 32 * j;
        if (i >= pieces) break;
        const float4 a = xr[i];
        const Four<T> d = dr[i];
        Four<T> sc{};
        if (scale) sc = reinterpret_cast<const Four<T>*>(scale)[i];
        v[j][0] = a.x + to_f(d.v[0]) * (scale ? to_f(sc.v[0]) : 1.0f);
        v[j][1] = a.y + to_f(d.v[1]) * (scale ? to_f(sc.v[1]) : 1.0f);
        v[j][2] = a.z + to_f(d.v[2]) * (scale ? to_f(sc.v[2]) : 1.0f);
        v[j][3] = a.w + to_f(d.v[3]) * (scale ? to_f(sc.v[3]) : 1.0f);
        xr[i] = make_float4(v[j][0], v[j][1], v[j][2], v[j][3]);
        sum += v[j][0] + v[j][1] + v[j][2] + v[j][3];
    }
    const float mean = rms ? 0.0f : warp_sum(sum) / float(cols);
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < V; ++j) {
        if (lane + 32 * j >= pieces) break;
#pragma unroll
        for (int e = 0; e < 4; ++e) ss += (v[j][e] - mean) * (v[j][e] - mean);
    }
    const float inv = rsqrtf(warp_sum(ss) / float(cols) + eps);
    auto* o = reinterpret_cast<Four<T>*>(out + row * cols);
#pragma unroll
    for (int j = 0; j < V; ++j) {
        const int64_t i = lane + 32 * j;
        if (i >= pieces) break;
        const Four<T> wv = reinterpret_cast<const Four<T>*>(w)[i];
        Four<T> bv{};
        if (bias) bv = reinterpret_cast<const Four<T>*>(bias)[i];
        Four<T> r;
#pragma unroll
        for (int e = 0; e < 4; ++e) r.v[e] = from_f<T>((v[j][e] - mean) * inv * to_f(wv.v[e]) + (bias ? to_f(bv.v[e]) : 0.0f));
        o[i] = r;
    }
}

// Row t·g² + y·g + x of out is patch (y, x) of image t (channel, then row, then column), each
// sample looked up in its channel's levels (a few hundred values: they stay in L1); columns past
// channels · patch² are zero. A thread writes two neighbouring columns; the index arithmetic in
// 32 bits (an image's planes hold far fewer than 2^31 samples) is most of the work.
template <class T>
__global__ void patch_rows_kernel(const uint8_t* planes, const T* levels, int channels, int size, int patch, int rows, int cols, T* out) {
    const int pairs = cols / 2;
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= int64_t(rows) * pairs) return;
    const int r = int(i / pairs), c = int(i % pairs) * 2, g = size / patch, area = patch * patch;
    const int t = r / (g * g), y = r % (g * g) / g, x = r % g;
    float v[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        const int col = c + e, channel = col / area, ky = col % area / patch, kx = col % patch;
        v[e] = channel < channels
                   ? to_f(levels[channel * 256 + planes[(int64_t(t * channels + channel) * size + y * patch + ky) * size + x * patch + kx]])
                   : 0.0f;
    }
    T* dst = out + int64_t(r) * cols + c;
    if constexpr (std::is_same_v<T, float>) *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
    else *reinterpret_cast<uint32_t*>(dst) = pack2<T>(v[0], v[1]);
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

// Each thread converts N consecutive values of a row (4 at once where the shapes allow).
template <class TIn, class TOut, int N>
__global__ void convert_rows_kernel(const TIn* src, int64_t src_stride, TOut* dst, int64_t dst_stride, int64_t rows, int64_t cols,
                                    const int32_t* index) {
    const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * N;
    if (c >= cols) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const int64_t from = index ? index[r] : r;
        if constexpr (N == 4) {
            const Four<TIn> in = *reinterpret_cast<const Four<TIn>*>(src + from * src_stride + c);
            Four<TOut> o;
#pragma unroll
            for (int i = 0; i < 4; ++i) o.v[i] = from_f<TOut>(to_f(in.v[i]));
            *reinterpret_cast<Four<TOut>*>(dst + r * dst_stride + c) = o;
        } else {
            dst[r * dst_stride + c] = from_f<TOut>(to_f(src[from * src_stride + c]));
        }
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

bool add_norm_rows(DataType t, float* x, const void* delta, const void* scale, const void* w, const void* bias, float eps, bool rms,
                   int64_t rows, int64_t cols, void* out, cudaStream_t s) {
    const int64_t per_lane = (cols / 4 + 31) / 32;
    if (cols % 4 != 0 || per_lane > 16) return false;
    if (rows == 0) return true;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        auto run = [&](auto v) {
            add_norm_rows_kernel<T, decltype(v)::value><<<unsigned((rows + 3) / 4), 128, 0, s>>>(
                x, static_cast<const T*>(delta), static_cast<const T*>(scale), static_cast<const T*>(w), static_cast<const T*>(bias),
                eps, rms, rows, cols, static_cast<T*>(out));
        };
        if (per_lane <= 2) run(std::integral_constant<int, 2>{});
        else if (per_lane <= 4) run(std::integral_constant<int, 4>{});
        else if (per_lane <= 8) run(std::integral_constant<int, 8>{});
        else run(std::integral_constant<int, 16>{});
    });
    launched("add_norm_rows");
    return true;
}

void patch_rows(DataType t, const void* planes, const void* levels, int64_t channels, int64_t size, int64_t patch, int64_t rows,
                int64_t cols, void* out, cudaStream_t s) {
    if (rows == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        patch_rows_kernel<T><<<blocks_for(rows * (cols / 2), 256), 256, 0, s>>>(static_cast<const uint8_t*>(planes),
                                                                                static_cast<const T*>(levels), int(channels), int(size),
                                                                                int(patch), int(rows), int(cols), static_cast<T*>(out));
    });
    launched("patch_rows");
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
    if (group_rows <= 0 || rows % group_rows != 0) throw lumen::Error("attention_full: groups do not tile the rows");
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
        default: throw lumen::Error("attention_full: head_dim " + std::to_string(head_dim) + " is not supported (16, 32, 64, 128)");
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
        const auto* in = static_cast<const TS*>(src);
        auto* o = static_cast<TD*>(dst);
        if (fours<TS>(src, cols, src_stride) && fours<TD>(dst, cols, dst_stride))
            convert_rows_kernel<TS, TD, 4>
                <<<matrix_grid(rows, cols / 4, 256), 256, 0, s>>>(in, src_stride, o, dst_stride, rows, cols, index);
        else
            convert_rows_kernel<TS, TD, 1><<<matrix_grid(rows, cols, 256), 256, 0, s>>>(in, src_stride, o, dst_stride, rows, cols, index);
    });
    launched("convert_rows");
}

}  // namespace lumen::cuda
