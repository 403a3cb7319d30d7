// Products of a few rows (decoding): every weight byte read once, with the step after folded in
// (SiLU·up, the residual add, RoPE + KV store). CPU reference: CpuBackend::linear and its fused
// forms (engine/backend/cpu_backend.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "kernels/device_common.cuh"
#include "kernels/gemv_epilogue.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;


// out[n][o] = x[n] · w[o] (+ bias[o]) for a few rows of x (decoding): each warp streams one weight
// row (two when gated) with 16-byte loads, U loads deep per lane, the next U already in flight
// while the current ones are summed, and keeps N sums per row, so every weight byte is read once
// for all rows of x. The first loads go out before the previous kernel has finished (weights
// never change). Variants fold in the step after, rounding to T where the separate kernel's input
// would have been: kGated, the warp of column o also reads row inter + o (up) and writes
// silu(gate) · up; kAccumulate, the result is added to the fp32 residual stream.
// The launch bounds name a minimum of one block per SM on purpose: ptxas then gives the kernel
// about 118 registers instead of 100 and schedules its loads better (H100, Llama-2-7B shape,
// batch 1: 189 -> 200 tokens/s; the same card, the same commit otherwise).
template <class T, class O, int N, int U, bool kGated, bool kAccumulate, bool kRope>
__global__ void __launch_bounds__(128, 1) gemv_kernel(GemvParams p) {
    let_next_start();
    constexpr int R = kGated || kRope ? 2 : 1;
    const int lane = threadIdx.x & 31;
    const int64_t in = p.in;
    const int64_t warp_index = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    int64_t row[R], head, pair;
    if (!warp_rows<R, kGated, kRope>(p, warp_index, row, head, pair)) return;
    const T* w = static_cast<const T*>(p.w);
    const T* wr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wr[r] = w + row[r] * in;
    float acc[N][R] = {};
    constexpr int64_t kStep = 256 * U;  // elements of a row one pass of loads covers
    auto whole = [&](int64_t k) { return k + 256 * (U - 1) < in; };
    auto load = [&](uint4 (&dst)[R][U], int64_t k) {
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int r = 0; r < R; ++r) dst[r][u] = __ldg(reinterpret_cast<const uint4*>(wr[r] + k + 256 * u));
    };
    const T* x = static_cast<const T*>(p.x);
    auto sum = [&](const uint4 (&src)[R][U], int64_t k) {
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int n = 0; n < N; ++n) {
                float xv[8];
                load8(x + n * in + k + 256 * u, xv);
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const T* e = reinterpret_cast<const T*>(&src[r][u]);
#pragma unroll
                    for (int i = 0; i < 8; ++i) acc[n][r] += xv[i] * to_f(e[i]);
                }
            }
    };
    uint4 a[R][U], b[R][U];
    int64_t k = int64_t(lane) * 8;
    const bool any = whole(k);
    if (any) load(a, k);
    wait_for_previous();
    if (any) {
        for (;;) {
            const bool more = whole(k + kStep);
            if (more) load(b, k + kStep);
            sum(a, k);
            k += kStep;
            if (!more) break;
            const bool again = whole(k + kStep);
            if (again) load(a, k + kStep);
            sum(b, k);
            k += kStep;
            if (!again) break;
        }
    }
    // The rest of a row that is not a multiple of kStep long, 256 elements at a time.
    for (; k < in; k += 256) {
        float e[R][8];
#pragma unroll
        for (int r = 0; r < R; ++r) load8(wr[r] + k, e[r]);
#pragma unroll
        for (int n = 0; n < N; ++n) {
            float xv[8];
            load8(x + n * in + k, xv);
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[n][r] += xv[i] * e[r][i];
        }
    }
    finish_rows<T, O, N, R, kGated, kAccumulate, kRope>(p, acc, row, head, pair, lane);
}

// The same product with 4- or 8-bit codes (Weight::Format::Int4 / Int8 / Fp8): each lane loads 16
// bytes of a row's codes at a time (32 or 16 inputs, inside one group), U loads in flight, and sums
// x · code before applying the group's scale and zero once: Σ s(q - z)x = s(Σ qx - zΣx). Integer
// codes become floats through the exponent trick (2^23 + q read as a float, minus 2^23), which
// costs no conversion instruction; FP8 codes through the hardware's pair conversion.
struct QuantParams {
    const void* scales;    // [rows, groups] of T (FP8: fp32)
    const uint8_t* zeros;  // [rows, groups] (4-bit only)
    int64_t group_size;
};

template <class T, class O, int N, int U, int kBits, bool kFloat8, bool kGated, bool kAccumulate, bool kRope>
__device__ __forceinline__ void gemv_quantized_rows(const GemvParams& p, const QuantParams& q) {
    let_next_start();
    constexpr int R = kGated || kRope ? 2 : 1;
    constexpr int E = 128 / kBits;  // inputs per 16-byte load
    const int lane = threadIdx.x & 31;
    const int64_t in = p.in;
    const int64_t warp_index = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    int64_t row[R], head, pair;
    if (!warp_rows<R, kGated, kRope>(p, warp_index, row, head, pair)) return;
    const int64_t chunks = in / E, groups = (in + q.group_size - 1) / q.group_size;
    const uint4* codes[R];
#pragma unroll
    for (int r = 0; r < R; ++r) codes[r] = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.w) + row[r] * (in * kBits / 8));
    const T* scales = static_cast<const T*>(q.scales);
    const T* x = static_cast<const T*>(p.x);
    float acc[N][R] = {};
    bool waited = false;
    for (int64_t c0 = lane; c0 < chunks; c0 += 32 * U) {
        uint4 w[R][U];
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int r = 0; r < R; ++r)
                if (c0 + 32 * u < chunks) w[r][u] = __ldg(codes[r] + c0 + 32 * u);
        if (!waited) wait_for_previous(), waited = true;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t c = c0 + 32 * u;
            if (c >= chunks) break;
            const int64_t k = c * E, g = k / q.group_size;
            float scale[R], zero[R];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                scale[r] = kFloat8 ? static_cast<const float*>(q.scales)[row[r] * groups + g] : to_f(scales[row[r] * groups + g]);
                zero[r] = kBits == 4 ? float(q.zeros[row[r] * groups + g]) : 0.0f;
            }
#pragma unroll
            for (int n = 0; n < N; ++n) {
                float xv[E];
#pragma unroll
                for (int j = 0; j < E / 8; ++j) load8(x + n * in + k + 8 * j, xv + 8 * j);
                float xsum = 0;
                if constexpr (kBits == 4)
#pragma unroll
                    for (int e = 0; e < E; ++e) xsum += xv[e];
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const uint32_t* words = reinterpret_cast<const uint32_t*>(&w[r][u]);
                    float dot = 0;
                    if constexpr (kFloat8)
#pragma unroll
                        for (int e = 0; e < E; e += 2) {
                            const float2 code = e4m3x2_to_float2(uint16_t(words[e / 4] >> (8 * (e % 4))));
                            dot = fmaf(xv[e + 1], code.y, fmaf(xv[e], code.x, dot));
                        }
                    else
#pragma unroll
                    for (int e = 0; e < E; ++e) {
                        float code;
                        if constexpr (kBits == 4) {
                            code = __uint_as_float(0x4B000000u | ((words[e / 8] >> (4 * (e % 8))) & 0xFu)) - 8388608.0f;
                        } else {
                            code = float(int8_t(words[e / 4] >> (8 * (e % 4))));
                        }
                        dot = fmaf(xv[e], code, dot);
                    }
                    acc[n][r] += scale[r] * (dot - zero[r] * xsum);
                }
            }
        }
    }
    if (!waited) wait_for_previous();
    finish_rows<T, O, N, R, kGated, kAccumulate, kRope>(p, acc, row, head, pair, lane);
}

template <class T, class O, int N, int U, int kBits, bool kFloat8, bool kGated, bool kAccumulate, bool kRope>
__global__ void __launch_bounds__(128, 1) gemv_quantized_kernel(GemvParams p, QuantParams q) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
    // The backend refuses FP8 weights below compute capability 8.9: no code for them there (it
    // would only lengthen the build).
    if constexpr (kFloat8) __trap();
    else
#endif
        gemv_quantized_rows<T, O, N, U, kBits, kFloat8, kGated, kAccumulate, kRope>(p, q);
}

}  // namespace

bool gemv(DataType t, const void* x, int64_t n, int64_t in, const void* w, int64_t out_features, void* out, DataType out_type,
          const GemvOptions& o, cudaStream_t s) {
    if (t == DataType::F32 || n < 1 || n > 8 || in % 8 != 0) return false;
    const int bits = o.quantized ? o.quantized->bits : 16;
    if (o.quantized) {
        const int64_t inputs_per_load = 128 / bits, group = o.quantized->group_size;
        // FP8 block scales may leave the last group short.
        const bool short_last = o.quantized->float8;
        if ((bits != 4 && bits != 8) || in % inputs_per_load != 0 || group <= 0 || group % inputs_per_load != 0 || (!short_last && in % group != 0))
            return false;
    }
    if (!folds(t, n, out_features, out_type, o)) return false;
    // One weight row per warp, eight 16-byte loads deep per lane (two rows four deep when gated or
    // rotated): measured on H100 against two and four rows per warp (more warps in flight beat
    // reusing each x value).
    const int64_t warps = o.silu_gate ? out_features : o.rope ? out_features / 2 : out_features;
    const unsigned blocks = unsigned((warps + 3) / 4);
    GemvParams params{x, in, w, out_features, o.bias, out, o.rope ? *o.rope : RopeStore{}};
    const QuantParams quant = o.quantized ? QuantParams{o.quantized->scales, o.quantized->zeros, o.quantized->group_size} : QuantParams{};
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, float>) {
            auto run = [&](auto out_tag, auto gated, auto accumulate, auto rope, auto count) {
                using O = decltype(out_tag);
                constexpr bool kPaired = decltype(gated)::value || decltype(rope)::value;
                constexpr int N = decltype(count)::value;
                constexpr bool G = decltype(gated)::value, A = decltype(accumulate)::value, P = decltype(rope)::value;
                if (bits == 4) launch_early(gemv_quantized_kernel<T, O, N, 4, 4, false, G, A, P>, dim3(blocks), dim3(128), 0, s, params, quant);
                else if (bits == 8 && o.quantized->float8)
                    launch_early(gemv_quantized_kernel<T, O, N, 4, 8, true, G, A, P>, dim3(blocks), dim3(128), 0, s, params, quant);
                else if (bits == 8) launch_early(gemv_quantized_kernel<T, O, N, 4, 8, false, G, A, P>, dim3(blocks), dim3(128), 0, s, params, quant);
                else launch_early(gemv_kernel<T, O, N, kPaired ? 4 : 8, G, A, P>, dim3(blocks), dim3(128), 0, s, params);
            };
            auto by_n = [&](auto... mode) {
                switch (n) {
                case 1: run(mode..., std::integral_constant<int, 1>{}); break;
                case 2: run(mode..., std::integral_constant<int, 2>{}); break;
                case 3: run(mode..., std::integral_constant<int, 3>{}); break;
                case 4: run(mode..., std::integral_constant<int, 4>{}); break;
                case 5: run(mode..., std::integral_constant<int, 5>{}); break;
                case 6: run(mode..., std::integral_constant<int, 6>{}); break;
                case 7: run(mode..., std::integral_constant<int, 7>{}); break;
                default: run(mode..., std::integral_constant<int, 8>{}); break;
                }
            };
            with_epilogue<T>(o, out_type, by_n);
        }
    });
    launched("gemv");
    return true;
}

}  // namespace lumen::cuda
