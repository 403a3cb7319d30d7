#pragma once
// What the split-attention kernels share (attention.cu over 16-bit caches, attention_codes.cu over
// caches of codes): the block shape and how a block's result is merged and written.
#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda::detail {

constexpr int kAttentionWarps = 4;
constexpr int kTile = 32 * kAttentionWarps;  // positions a block handles per pass, one per lane
constexpr int kMaxGroup = 8;  // query heads per key/value head handled together
constexpr int64_t kAttentionTickets = 1024;  // split-attention counters, one per (token, key/value head)
constexpr int kMaxSplits = 64;  // splits of one token's keys (their weights are merged in shared memory)

// One tile's scores (a position per lane, `valid` lanes) folded into a warp's running softmax
// (m, l): returns the lane's weight; `correction` is what the accumulators are scaled by.
__device__ __forceinline__ float softmax_step(float s, bool valid, float& m, float& l, float& correction) {
    const float m_new = fmaxf(m, warp_max(valid ? s : -INFINITY));
    const float pr = valid ? __expf(s - m_new) : 0.0f;
    correction = __expf(m - m_new);
    l = l * correction + warp_sum(pr);
    m = m_new;
    return pr;
}

// The end of a split-attention block (token blockIdx.x, key/value head blockIdx.y, split blockIdx.z
// of gridDim.z): its warps' softmax states (m, l, acc) merged; with one split the output written,
// otherwise the block's partial, and the last block of the token's head to finish merges them all.
// With row pieces (kPieceLanes lanes per value row) each lane's acc holds 8 dimensions of its rows,
// otherwise dimensions lane + 32j.
template <class T, int G, int DC, int kPieceLanes, int kAccDims>
__device__ __forceinline__ void finish_split(float (&m)[G], float (&l)[G], float (&acc)[G][kAccDims], int32_t D, int32_t heads,
                                             int32_t kv_heads, T* out, float* partial, int32_t* tickets) {
    constexpr bool kRowPieces = kPieceLanes > 1;
    constexpr int kDims = kAccDims;
    const int32_t t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int dims = (D + 31) / 32;
    // Merge the warps (and, with row pieces, first the lanes that hold the same dimensions).
    __shared__ float m_sh[kAttentionWarps][G], l_sh[kAttentionWarps][G];
    __shared__ float acc_sh[kAttentionWarps][G][DC > 0 ? DC : kMaxHeadDim];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        if (lane == 0) m_sh[warp][g] = m[g], l_sh[warp][g] = l[g];
        if constexpr (kRowPieces) {
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int o = kPieceLanes; o < 32; o <<= 1) acc[g][j] += __shfl_xor_sync(0xffffffff, acc[g][j], o);
            if (lane < kPieceLanes)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc_sh[warp][g][lane * 8 + j] = acc[g][j];
        } else {
#pragma unroll
            for (int j = 0; j < kDims; ++j) {
                const int d = lane + 32 * j;
                if (j < dims && d < D) acc_sh[warp][g][d] = acc[g][j];
            }
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        const int g = i / D, d = i % D;
        float M = -INFINITY;
        for (int w = 0; w < kAttentionWarps; ++w) M = fmaxf(M, m_sh[w][g]);
        float L = 0.0f, sum = 0.0f;
        if (M > -INFINITY)
            for (int w = 0; w < kAttentionWarps; ++w) {
                const float f = __expf(m_sh[w][g] - M);
                L += l_sh[w][g] * f;
                sum += acc_sh[w][g][d] * f;
            }
        const int32_t h = kvh * G + g;
        if (splits == 1) {
            out[int64_t(t) * heads * D + int64_t(h) * D + d] = from_f<T>(sum / L);
        } else {
            float* part = partial + ((int64_t(t) * heads + h) * splits + split) * (D + 2);
            part[d] = sum;
            if (d == 0) part[D] = M, part[D + 1] = L;
        }
    }
    if (splits == 1) return;

    // The last block of this token and head merges the splits.
    __shared__ bool merges;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t* ticket = tickets + int64_t(t) * kv_heads + kvh;
        merges = atomicAdd(ticket, 1) == splits - 1;
        if (merges) *ticket = 0;
    }
    __syncthreads();
    if (!merges) return;
    __threadfence();
    // Each split's weight in the merged softmax, once per head, then the weighted sums: two rounds
    // of loads rather than one per split. The weights live where the warps' sums were (no longer read).
    static_assert(sizeof acc_sh >= 2 * sizeof(float[G][kMaxSplits]), "room for the split weights");
    auto& weight_sh = *reinterpret_cast<float (*)[G][kMaxSplits]>(&acc_sh[0][0][0]);
    auto& mass_sh = *reinterpret_cast<float (*)[G][kMaxSplits]>(&acc_sh[0][0][0] + G * kMaxSplits);
    const float* parts = partial + (int64_t(t) * heads + int64_t(kvh) * G) * splits * (D + 2);
    for (int i = threadIdx.x; i < G * splits; i += blockDim.x) {
        const float* p = parts + int64_t(i) * (D + 2);  // head g = i / splits, split i % splits
        const float m_k = __ldcg(p + D), l_k = __ldcg(p + D + 1);
        weight_sh[i / splits][i % splits] = l_k > 0.0f ? m_k : -INFINITY;  // a split without keys weighs nothing
        mass_sh[i / splits][i % splits] = l_k;
    }
    __syncthreads();
    if (threadIdx.x < G) {
        const int g = threadIdx.x;
        float M = -INFINITY, L = 0.0f;
        for (int k = 0; k < splits; ++k) M = fmaxf(M, weight_sh[g][k]);
        for (int k = 0; k < splits; ++k) {
            const float f = weight_sh[g][k] == -INFINITY ? 0.0f : __expf(weight_sh[g][k] - M);
            L += mass_sh[g][k] * f;
            weight_sh[g][k] = f;
        }
        for (int k = 0; k < splits; ++k) weight_sh[g][k] /= L;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        const int g = i / D, d = i % D;
        const float* p = parts + int64_t(g) * splits * (D + 2) + d;
        float sum = 0.0f;
#pragma unroll 8
        for (int k = 0; k < splits; ++k) sum += __ldcg(p + int64_t(k) * (D + 2)) * weight_sh[g][k];
        out[int64_t(t) * heads * D + int64_t(kvh * G + g) * D + d] = from_f<T>(sum);
    }
}

// attention_split_kernel over a cache of codes (kv.bits 8 or 4; attention_codes.cu), for `group`
// query heads per key/value head; with `stores` the kernel first quantizes the batch's (one per
// sequence) key and value rows into the cache.
void attention_split_codes(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& batch,
                           void* pool, int32_t layer, const KvLayout& kv, int32_t group, dim3 grid, int32_t span, bool stores,
                           void* out, float* partial, int32_t* tickets, cudaStream_t s);
// Quantizes the key and value rows of the batch's tokens (rotated in qkv) into a cache of codes.
void store_codes(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& batch, void* pool,
                 int32_t layer, const KvLayout& kv, cudaStream_t s);

}  // namespace lumen::cuda::detail
