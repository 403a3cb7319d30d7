#pragma once
// What the products of a few rows (gemv.cu, w4a16.cu) share: their arguments and the steps folded
// in after the product (CPU reference: CpuBackend::linear's epilogues).
#include <type_traits>

#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

// Token n's dimensions `pair` and `pair + D/2` of `head` (a query, key or value head of the fused
// q/k/v row): rotated as rope_store_kv_kernel rotates them (queries and keys), written at `at`
// (and at `at + D/2`), and keys and values stored in the cache (one of codes: by attention).
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
    if (head < r.heads || r.kv.bits) return;
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

// The weight rows of GEMV warp `warp_index`: one; gate and up; or the two halves RoPE rotates
// together (`head`, `pair`). False when the warp has none (gated, out_features counts the pairs).
template <int R, bool kGated, bool kRope>
__device__ __forceinline__ bool warp_rows(const GemvParams& p, int64_t warp_index, int64_t (&row)[R], int64_t& head, int64_t& pair) {
    const int32_t half = p.rope.head_dim / 2;
    head = kRope ? warp_index / half : 0, pair = kRope ? warp_index % half : 0;
    if constexpr (kGated) row[0] = warp_index, row[1] = warp_index + p.out_features;
    else if constexpr (kRope) row[0] = head * p.rope.head_dim + pair, row[1] = row[0] + half;
    else row[0] = warp_index;
    return (kGated ? warp_index : row[R - 1]) < p.out_features;
}

// Whether a product of n rows of type t can fold `o`'s step in (one step at most; fp32 output only
// for plain products or the residual add; RoPE over whole heads of this batch's tokens).
inline bool folds(DataType t, int64_t n, int64_t out_features, DataType out_type, const GemvOptions& o) {
    if (int(o.silu_gate) + int(o.accumulate) + int(o.rope != nullptr) > 1) return false;
    if (out_type != (o.accumulate ? DataType::F32 : t) && (out_type != DataType::F32 || o.silu_gate || o.rope)) return false;
    return !o.rope || (o.rope->head_dim % 2 == 0 && out_features % o.rope->head_dim == 0 && o.rope->batch.num_tokens == n);
}

// Calls run(output type tag, gated, accumulate, rope) with the compile-time flags of `o`.
template <class T, class Run>
void with_epilogue(const GemvOptions& o, DataType out_type, Run&& run) {
    using Yes = std::true_type;
    using No = std::false_type;
    if (o.accumulate) run(float{}, No{}, Yes{}, No{});
    else if (o.silu_gate) run(T{}, Yes{}, No{}, No{});
    else if (o.rope) run(T{}, No{}, No{}, Yes{});
    else if (out_type == DataType::F32) run(float{}, No{}, No{}, No{});
    else run(T{}, No{}, No{}, No{});
}

// One output of a product of a few rows: token n's sums for `row` (two rows when gated or rotated),
// the bias added and the step after folded in, rounding to T where the separate kernel's input
// would have been: kGated writes silu(gate) · up, kRope rotates and stores keys and values,
// kAccumulate adds to the fp32 residual stream.
template <class T, class O, int R, bool kGated, bool kAccumulate, bool kRope>
__device__ __forceinline__ void finish_element(const GemvParams& p, int n, const int64_t (&row)[R], int64_t head, int64_t pair, float (&v)[R]) {
    const int64_t out_features = p.out_features;
    const T* bias = static_cast<const T*>(p.bias);
    O* out = static_cast<O*>(p.out);
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

// The end of a GEMV warp: each row's sums reduced over the warp, the bias added and the step
// after folded in (see gemv_kernel), by lane 0.
template <class T, class O, int N, int R, bool kGated, bool kAccumulate, bool kRope>
__device__ __forceinline__ void finish_rows(const GemvParams& p, float (&acc)[N][R], const int64_t (&row)[R], int64_t head, int64_t pair,
                                            int lane) {
#pragma unroll
    for (int n = 0; n < N; ++n) {
        float v[R];
#pragma unroll
        for (int r = 0; r < R; ++r) v[r] = warp_sum(acc[n][r]);
        if (lane == 0) finish_element<T, O, R, kGated, kAccumulate, kRope>(p, n, row, head, pair, v);
    }
}


}  // namespace
}  // namespace lumen::cuda
