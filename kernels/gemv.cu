// Products of a few rows (decoding): every weight byte read once, with the step after folded in
// (SiLU·up, the residual add, RoPE + KV store). CPU reference: CpuBackend::linear and its fused
// forms (engine/backend/cpu_backend.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;


// Token n's dimensions `pair` and `pair + D/2` of `head` (a query, key or value head of the fused
// q/k/v row): rotated as rope_store_kv_kernel rotates them (queries and keys), written at `at`
// (and at `at + D/2`), and keys and values stored in the cache.
template <class T>
__device__ __forceinline__ void rope_store_pair(const RopeStore& r, int t, int64_t head, int64_t pair, float a, float b, T* at) {
    const int32_t D = r.head_dim, half = D / 2;
    const float pos = float(r.batch.positions[t]);
    if (head < r.heads + r.kv_heads) {
        const float inv = (1.0f / powf(r.batch.rope_base[t], float(2 * pair) / float(D))) / r.linear_factor;
        float sn, cs;
        sincosf(pos * inv, &sn, &cs);
        const float ra = a * cs - b * sn, rb = b * cs + a * sn;
        a = ra, b = rb;
    }
    const T ta = from_f<T>(a), tb = from_f<T>(b);
    at[0] = ta;
    at[half] = tb;
    if (head < r.heads) return;
    const int32_t which = head < r.heads + r.kv_heads ? 0 : 1;
    const int32_t kvh = int32_t(head - r.heads - which * r.kv_heads), p = r.batch.positions[t];
    const int32_t block = r.batch.block_tables[int64_t(r.batch.token_seq[t]) * r.batch.max_blocks + p / r.kv.block_size];
    T* dst = static_cast<T*>(r.pool) + kv_offset(r.kv, block, r.layer, which, kvh, p % r.kv.block_size) + pair;
    dst[0] = ta;
    dst[half] = tb;
}

// The arguments of gemv_kernel (see GemvOptions).
struct GemvParams {
    const void* x;
    int64_t in;
    const void* w;
    int64_t out_features;  // columns of out
    const void* bias;
    void* out;
    RopeStore rope;
};

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
    const int64_t in = p.in, out_features = p.out_features;
    const int64_t warp_index = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    // The weight rows of this warp: one; gate and up; or the two halves RoPE rotates together.
    const int32_t half = p.rope.head_dim / 2;
    const int64_t head = kRope ? warp_index / half : 0, pair = kRope ? warp_index % half : 0;
    int64_t row[R];
    if constexpr (kGated) row[0] = warp_index, row[1] = warp_index + out_features;
    else if constexpr (kRope) row[0] = head * p.rope.head_dim + pair, row[1] = row[0] + half;
    else row[0] = warp_index;
    if ((kGated ? warp_index : row[R - 1]) >= out_features) return;  // gated: out_features counts the pairs
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
    const T* bias = static_cast<const T*>(p.bias);
    O* out = static_cast<O*>(p.out);
#pragma unroll
    for (int n = 0; n < N; ++n) {
        float v[R];
#pragma unroll
        for (int r = 0; r < R; ++r) v[r] = warp_sum(acc[n][r]);
        if (lane != 0) continue;
        if (bias)
#pragma unroll
            for (int r = 0; r < R; ++r) v[r] += to_f(bias[row[r]]);
        if constexpr (kGated) {
            out[n * out_features + row[0]] = from_f<O>(silu_times(to_f(from_f<T>(v[0])), to_f(from_f<T>(v[1]))));
        } else if constexpr (kRope) {
            rope_store_pair<T>(p.rope, n, head, pair, to_f(from_f<T>(v[0])), to_f(from_f<T>(v[1])),
                               reinterpret_cast<T*>(out) + n * out_features + row[0]);
        } else if constexpr (kAccumulate) {
            out[n * out_features + row[0]] += to_f(from_f<T>(v[0]));
        } else {
            out[n * out_features + row[0]] = from_f<O>(v[0]);
        }
    }
}


}  // namespace

bool gemv(DataType t, const void* x, int64_t n, int64_t in, const void* w, int64_t out_features, void* out, DataType out_type,
          const GemvOptions& o, cudaStream_t s) {
    if (t == DataType::F32 || n < 1 || n > 8 || in % 8 != 0) return false;
    if (int(o.silu_gate) + int(o.accumulate) + int(o.rope != nullptr) > 1) return false;
    // fp32 output: the logits (plain products) or the residual stream (accumulate).
    if (out_type != (o.accumulate ? DataType::F32 : t) && (out_type != DataType::F32 || o.silu_gate || o.rope)) return false;
    if (o.rope && (o.rope->head_dim % 2 != 0 || out_features % o.rope->head_dim != 0 || o.rope->batch.num_tokens != n))
        return false;
    // One weight row per warp, eight 16-byte loads deep per lane (two rows four deep when gated or
    // rotated): measured on H100 against two and four rows per warp (more warps in flight beat
    // reusing each x value).
    const int64_t warps = o.silu_gate ? out_features : o.rope ? out_features / 2 : out_features;
    const unsigned blocks = unsigned((warps + 3) / 4);
    GemvParams params{x, in, w, out_features, o.bias, out, o.rope ? *o.rope : RopeStore{}};
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, float>) {
            auto run = [&](auto out_tag, auto gated, auto accumulate, auto rope, auto count) {
                using O = decltype(out_tag);
                constexpr bool kPaired = decltype(gated)::value || decltype(rope)::value;
                launch_early(gemv_kernel<T, O, decltype(count)::value, kPaired ? 4 : 8, decltype(gated)::value,
                                         decltype(accumulate)::value, decltype(rope)::value>,
                             dim3(blocks), dim3(128), 0, s, params);
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
            using Yes = std::true_type;
            using No = std::false_type;
            if (o.accumulate) by_n(float{}, No{}, Yes{}, No{});
            else if (o.silu_gate) by_n(T{}, Yes{}, No{}, No{});
            else if (o.rope) by_n(T{}, No{}, No{}, Yes{});
            else if (out_type == DataType::F32) by_n(float{}, No{}, No{}, No{});
            else by_n(T{}, No{}, No{}, No{});
        }
    });
    launched("gemv");
    return true;
}

}  // namespace lumen::cuda
