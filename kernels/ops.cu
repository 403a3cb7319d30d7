#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <algorithm>
#include <type_traits>
#include <stdexcept>
#include <string>

#include "kernels/device_common.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {

void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

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

constexpr int kMaxHeadDim = 256;

template <class T>
__global__ void rope_store_kv_kernel(T* qkv, int32_t heads, int32_t kv_heads, int32_t D, float linear_factor, Batch b,
                                     T* pool, int32_t layer, KvLayout kv) {
    let_next_start();
    wait_for_previous();
    const int32_t t = blockIdx.x;
    const int32_t half = D / 2;
    const int64_t width = int64_t(heads + 2 * kv_heads) * D;
    T* row = qkv + int64_t(t) * width;
    // One angle per frequency, shared by every head: as transformers computes it, in fp32,
    // 1 / base^(2i/d) over the linear factor, times the position.
    __shared__ float cos_sh[kMaxHeadDim / 2], sin_sh[kMaxHeadDim / 2];
    const float pos = float(b.positions[t]);
    const float base = b.rope_base[t];
    for (int32_t i = threadIdx.x; i < half; i += blockDim.x) {
        const float inv = (1.0f / powf(base, float(2 * i) / float(D))) / linear_factor;
        sincosf(pos * inv, &sin_sh[i], &cos_sh[i]);
    }
    __syncthreads();
    for (int32_t k = threadIdx.x; k < (heads + kv_heads) * half; k += blockDim.x) {
        const int32_t h = k / half, i = k % half;
        T* head = row + int64_t(h) * D;
        const float a = to_f(head[i]), bb = to_f(head[i + half]);
        head[i] = from_f<T>(a * cos_sh[i] - bb * sin_sh[i]);
        head[i + half] = from_f<T>(bb * cos_sh[i] + a * sin_sh[i]);
    }
    __syncthreads();
    const int32_t seq = b.token_seq[t], p = b.positions[t];
    const int32_t block = b.block_tables[int64_t(seq) * b.max_blocks + p / kv.block_size];
    const int32_t slot = p % kv.block_size;
    const T* k = row + int64_t(heads) * D;
    const T* v = k + int64_t(kv_heads) * D;
    for (int32_t e = threadIdx.x; e < kv_heads * D; e += blockDim.x) {
        const int32_t h = e / D, d = e % D;
        pool[kv_offset(kv, block, layer, 0, h, slot) + d] = k[e];
        pool[kv_offset(kv, block, layer, 1, h, slot) + d] = v[e];
    }
}

constexpr int kAttentionWarps = 4;
constexpr int kTile = 32 * kAttentionWarps;  // positions a block handles per pass, one per lane
constexpr int kMaxGroup = 8;  // query heads per key/value head handled together
constexpr int64_t kAttentionTickets = 1024;  // split-attention counters, one per (token, key/value head)
constexpr int kMaxSplits = 64;  // splits of one token's keys (their weights are merged in shared memory)

// Eight consecutive elements as floats (16-byte aligned loads).
__device__ __forceinline__ void load8(const float* p, float* out) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}
template <class T>
__device__ __forceinline__ void load8(const T* p, float* out) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* h = reinterpret_cast<const T*>(&raw);
    for (int i = 0; i < 8; ++i) out[i] = to_f(h[i]);
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// Attention over the paged cache, split along the keys. A block takes one token, one key/value
// head (and every query head of its group, so each key and value is loaded once for all of
// them) and one span of cached positions. Each lane scores one position; each warp keeps an
// online softmax over its positions; the warps merge at the end. With one split the block writes
// the output; otherwise it writes its partial (max, sum, weighted values) and the last block of
// the token's head to finish merges them all (`tickets` counts the finished blocks, and that
// block sets its counter back to zero).
// kEarly (decode steps, head size 64 or 128): each warp's first tile of keys and values, all but
// the current token's row (earlier steps wrote them), is loaded before waiting for the q/k/v
// product, so that those loads overlap it.
template <class T, int G, int DC, bool kEarly>
__global__ void __launch_bounds__(32 * kAttentionWarps)
attention_split_kernel(const T* qkv, int32_t heads, int32_t kv_heads, int32_t d_runtime, Batch b, const T* pool,
                       int32_t layer, KvLayout kv, int32_t span, T* out, float* partial, int32_t* tickets) {
    let_next_start();
    // DC: the head size when known at compile time (loops unroll), 0 for any other size.
    const int32_t D = DC > 0 ? DC : d_runtime;
    constexpr int kDims = DC > 0 ? (DC + 31) / 32 : kMaxHeadDim / 32;
    // 16-bit types, head sizes 64 and 128: the lanes of a warp split each value row in 16-byte pieces, so a
    // tile's values are a few loads per lane, all in flight together.
    constexpr bool kRowPieces = (DC == 64 || DC == 128) && sizeof(T) == 2;
    static_assert(kRowPieces || !kEarly, "early loads come in row pieces");
    constexpr int kPieceLanes = kRowPieces ? DC / 8 : 1;  // lanes per value row
    constexpr int kRowsAtOnce = 32 / kPieceLanes;
    constexpr int kAccDims = kRowPieces ? 8 : kDims;
    const int32_t t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int32_t len = b.positions[t] + 1;
    const int32_t first = split * span, last = min(len, first + span);
    const int64_t width = int64_t(heads + 2 * kv_heads) * D;
    const int dims = (D + 31) / 32;  // output elements per lane (without row pieces)

    // The batch (positions, block tables) was copied before any kernel of this forward ran.
    const int32_t* table = b.block_tables + int64_t(b.token_seq[t]) * b.max_blocks;
    const int32_t base0 = first + warp * 32;
    int32_t next_block = base0 < last ? table[base0 / kv.block_size] : 0;
    const int64_t row_stride = D;  // consecutive slots of one block are consecutive rows
    const int sub = lane / kPieceLanes, c = (lane % kPieceLanes) * 8;
    // This lane's key row (kEarly) and value pieces of the tile at hand; rows in [lo, hi) of it.
    uint4 keys[kEarly ? DC / 8 : 1];
    uint4 pieces[kRowPieces ? 32 / kRowsAtOnce : 1];
    auto load_keys = [&](const T* k_tile, int32_t lo, int32_t hi) {
        if (lane >= lo && lane < hi)
#pragma unroll
            for (int j = 0; j < int(sizeof keys / sizeof keys[0]); ++j)
                keys[j] = *reinterpret_cast<const uint4*>(k_tile + lane * row_stride + j * 8);
    };
    auto load_values = [&](const T* v_tile, int32_t lo, int32_t hi) {
#pragma unroll
        for (int i = 0; i < int(sizeof pieces / sizeof pieces[0]); ++i) {
            const int row = i * kRowsAtOnce + sub;
            if (row >= lo && row < hi) pieces[i] = *reinterpret_cast<const uint4*>(v_tile + row * row_stride + c);
        }
    };
    auto tile_of = [&](int32_t block, int32_t base, int32_t which) {
        return pool + kv_offset(kv, block, layer, which, kvh, base % kv.block_size);
    };
    if constexpr (kEarly) {
        if (base0 < last) {
#pragma unroll
            for (int i = 0; i < int(sizeof pieces / sizeof pieces[0]); ++i) pieces[i] = make_uint4(0, 0, 0, 0);
            // Up to the current token's row, which the q/k/v product writes.
            const int32_t early = min(len - 1 - base0, min(32, last - base0));
            load_keys(tile_of(next_block, base0, 0), 0, early);
            load_values(tile_of(next_block, base0, 1), 0, early);
        }
    }
    wait_for_previous();
    __shared__ __align__(16) float q_sh[G][DC > 0 ? DC : kMaxHeadDim];
    __shared__ float p_sh[kAttentionWarps][G][32];
    const float scale = rsqrtf(float(D));
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        const int g = i / D, d = i % D;
        q_sh[g][d] = to_f(qkv[int64_t(t) * width + int64_t(kvh * G + g) * D + d]) * scale;
    }
    __syncthreads();

    float m[G], l[G], acc[G][kAccDims];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < kAccDims; ++j) acc[g][j] = 0.0f;
    }
    // Tiles of 32 positions start on multiples of 32 (span is one), so a tile never leaves its
    // 64-position block: one table lookup per tile.
    for (int32_t base = first + warp * 32; base < last; base += kTile) {
        const int32_t block = next_block;
        if (base + kTile < last) next_block = table[(base + kTile) / kv.block_size];
        const T* k_tile = tile_of(block, base, 0);
        const T* v_tile = tile_of(block, base, 1);
        const int32_t count = min(32, last - base);
        const bool valid = lane < count;
        // Values first, so that their loads are in flight with the keys'. Rows past `count` were
        // never written (they may hold anything): zeros instead.
        if constexpr (kRowPieces) {
            const int32_t from = kEarly && base == base0 ? len - 1 - base : 0;  // kEarly: the rest came early
            if (from == 0)
#pragma unroll
                for (int i = 0; i < int(sizeof pieces / sizeof pieces[0]); ++i) pieces[i] = make_uint4(0, 0, 0, 0);
            if constexpr (kEarly) load_keys(k_tile, max(from, 0), count);
            load_values(v_tile, max(from, 0), count);
        }
        float s[G];
#pragma unroll
        for (int g = 0; g < G; ++g) s[g] = 0.0f;
        if (kEarly && valid) {
#pragma unroll
            for (int j = 0; j < int(sizeof keys / sizeof keys[0]); ++j) {
                const T* e = reinterpret_cast<const T*>(&keys[j]);
#pragma unroll
                for (int g = 0; g < G; ++g)
#pragma unroll
                    for (int i = 0; i < 8; ++i) s[g] += q_sh[g][j * 8 + i] * to_f(e[i]);
            }
        } else if (valid) {
            // With up to two query heads per key every load of the row goes in flight at once (this
            // loop and the one over values below are the latency a decode step waits for); with
            // larger groups the extra registers cost more than they save (measured on H100).
            const T* k = k_tile + lane * row_stride;
#pragma unroll(G <= 2 ? 16 : 4)
            for (int d = 0; d < D; d += 8) {
                float kk[8];
                load8(k + d, kk);
#pragma unroll
                for (int g = 0; g < G; ++g)
#pragma unroll
                    for (int i = 0; i < 8; ++i) s[g] += q_sh[g][d + i] * kk[i];
            }
        }
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float tile_max = warp_max(valid ? s[g] : -INFINITY);
            const float m_new = fmaxf(m[g], tile_max);
            const float pr = valid ? __expf(s[g] - m_new) : 0.0f;
            const float correction = __expf(m[g] - m_new);
            l[g] = l[g] * correction + warp_sum(pr);
#pragma unroll
            for (int j = 0; j < kAccDims; ++j) acc[g][j] *= correction;
            m[g] = m_new;
            p_sh[warp][g][lane] = pr;
        }
        __syncwarp();
        if constexpr (kRowPieces) {
#pragma unroll
            for (int i = 0; i < 32 / kRowsAtOnce; ++i) {
                const T* e = reinterpret_cast<const T*>(&pieces[i]);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    const float pr = p_sh[warp][g][i * kRowsAtOnce + sub];
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[g][j] += pr * to_f(e[j]);
                }
            }
        } else {
#pragma unroll 8
            for (int32_t i = 0; i < 32; ++i) {
                if (i >= count) break;
                const T* v = v_tile + i * row_stride;
#pragma unroll
                for (int j = 0; j < kDims; ++j) {
                    if (j >= dims) break;
                    const int d = lane + 32 * j;
                    const float vv = d < D ? to_f(v[d]) : 0.0f;
#pragma unroll
                    for (int g = 0; g < G; ++g) acc[g][j] += p_sh[warp][g][i] * vv;
                }
            }
        }
        __syncwarp();
    }

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

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

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

// Prompt attention: a block takes up to 32 consecutive tokens of one sequence and one query head,
// and streams the keys and values before them through shared memory 32 positions at a time, so
// each cached row is read once per tile of queries rather than once per query. Warps own 8
// queries each; lanes score one position each, then accumulate 4 (of 128) output dimensions.
constexpr int kQueryTile = 32;
template <class T, int DC>
__global__ void __launch_bounds__(128)
attention_prefill_kernel(const T* qkv, int32_t heads, int32_t kv_heads, int32_t d_runtime, Batch b, const T* pool,
                         int32_t layer, KvLayout kv, T* out) {
    const int32_t D = DC > 0 ? DC : d_runtime;
    // Any head size up to 128 (the runtime variant); larger heads take the split kernel.
    constexpr int kDims = DC > 0 ? (DC + 31) / 32 : 4;
    constexpr int kRow = (DC > 0 ? DC : 128) + 8;  // padded: 16-byte rows land on different banks
    const int32_t tile = blockIdx.x, h = blockIdx.y, kvh = h / (heads / kv_heads);
    const int32_t first_token = b.query_tiles[2 * tile], count = b.query_tiles[2 * tile + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t width = int64_t(heads + 2 * kv_heads) * D;
    const int dims = (D + 31) / 32;

    __shared__ __align__(16) T q_sh[kQueryTile][kRow];
    __shared__ __align__(16) T k_sh[32][kRow];
    __shared__ __align__(16) T v_sh[32][kRow];
    __shared__ float p_sh[4][8][32];
    for (int i = threadIdx.x; i < kQueryTile * D; i += blockDim.x) {
        const int q = i / D, d = i % D;
        q_sh[q][d] = q < count ? qkv[int64_t(first_token + q) * width + int64_t(h) * D + d] : from_f<T>(0.0f);
    }
    const int32_t seq = b.token_seq[first_token];
    const int32_t* table = b.block_tables + int64_t(seq) * b.max_blocks;
    const float scale = rsqrtf(float(D));
    int32_t my_pos[8];
    float m[8], l[8], acc[8][kDims];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int q = warp * 8 + j;
        my_pos[j] = q < count ? b.positions[first_token + q] : -1;
        m[j] = -INFINITY;
        l[j] = 0.0f;
#pragma unroll
        for (int e = 0; e < kDims; ++e) acc[j][e] = 0.0f;
    }
    const int32_t last_pos = b.positions[first_token + count - 1];
    for (int32_t base = 0; base <= last_pos; base += 32) {
        __syncthreads();
        const int32_t block = table[base / kv.block_size], slot0 = base % kv.block_size;
        const T* k_src = pool + kv_offset(kv, block, layer, 0, kvh, slot0);
        const T* v_src = pool + kv_offset(kv, block, layer, 1, kvh, slot0);
        // Rows past the last query's position were never written: zeros, not whatever is there.
        const int rows = min(32, last_pos - base + 1);
        for (int i = threadIdx.x; i < 32 * D / 8; i += blockDim.x) {
            const int r = i / (D / 8), c = (i % (D / 8)) * 8;
            uint4 kz = {0, 0, 0, 0}, vz = {0, 0, 0, 0};
            if (r < rows) {
                kz = *reinterpret_cast<const uint4*>(k_src + int64_t(r) * D + c);
                vz = *reinterpret_cast<const uint4*>(v_src + int64_t(r) * D + c);
            }
            *reinterpret_cast<uint4*>(&k_sh[r][c]) = kz;
            *reinterpret_cast<uint4*>(&v_sh[r][c]) = vz;
        }
        __syncthreads();
        const int32_t p = base + lane;
        float s[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) s[j] = 0.0f;
        for (int d = 0; d < D; d += 8) {
            float kk[8];
            load8(&k_sh[lane][d], kk);
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                float qq[8];
                load8(&q_sh[warp * 8 + j][d], qq);
#pragma unroll
                for (int i = 0; i < 8; ++i) s[j] += qq[i] * kk[i];
            }
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const bool visible = p <= my_pos[j];
            const float sj = visible ? s[j] * scale : -INFINITY;
            const float tile_max = warp_max(sj);
            const float m_new = fmaxf(m[j], tile_max);
            const float pr = visible ? __expf(sj - m_new) : 0.0f;
            const float correction = m_new == -INFINITY ? 1.0f : __expf(m[j] - m_new);
            l[j] = l[j] * correction + warp_sum(pr);
#pragma unroll
            for (int e = 0; e < kDims; ++e) acc[j][e] *= correction;
            m[j] = m_new;
            p_sh[warp][j][lane] = pr;
        }
        __syncwarp();
        for (int i = 0; i < 32; ++i) {
#pragma unroll
            for (int e = 0; e < kDims; ++e) {
                const int d = lane + 32 * e;
                if (e >= dims || d >= D) break;
                const float vv = to_f(v_sh[i][d]);
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[j][e] += p_sh[warp][j][i] * vv;
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int q = warp * 8 + j;
        if (q >= count) break;
        T* o = out + int64_t(first_token + q) * heads * D + int64_t(h) * D;
#pragma unroll
        for (int e = 0; e < kDims; ++e) {
            const int d = lane + 32 * e;
            if (e < dims && d < D) o[d] = from_f<T>(acc[j][e] / l[j]);
        }
    }
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

// Argmax as one 64-bit maximum per row: the value's bits made order-preserving in the high half,
// the complement of the index in the low half (so that ties go to the first index). Blocks take
// chunks of a row (a 150,000-token vocabulary is tens of blocks, not one) and merge with atomicMax.
constexpr int64_t kArgmaxChunk = 4096;
__device__ __forceinline__ unsigned long long argmax_key(float v, int64_t i) {
    uint32_t bits = __float_as_uint(v);
    bits = bits & 0x80000000u ? ~bits : bits | 0x80000000u;
    return (static_cast<unsigned long long>(bits) << 32) | static_cast<uint32_t>(~uint32_t(i));
}

__global__ void argmax_kernel(const float* logits, int64_t cols, unsigned long long* keys) {
    let_next_start();
    wait_for_previous();
    const float* row = logits + int64_t(blockIdx.y) * cols;
    const int64_t first = int64_t(blockIdx.x) * kArgmaxChunk, last = min(cols, first + kArgmaxChunk);
    unsigned long long best = 0;  // below every real key: NaNs are skipped
#pragma unroll 4
    for (int64_t i = first + threadIdx.x; i < last; i += blockDim.x)
        if (!isnan(row[i])) best = max(best, argmax_key(row[i], i));
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffff, best, o));
    __shared__ unsigned long long warps[32];
    if ((threadIdx.x & 31) == 0) warps[threadIdx.x >> 5] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < int(blockDim.x >> 5); ++w) best = max(best, warps[w]);
        atomicMax(keys + blockIdx.y, best);
    }
}

__global__ void argmax_index_kernel(const unsigned long long* keys, int32_t rows, int32_t* out) {
    let_next_start();
    wait_for_previous();
    for (int32_t r = threadIdx.x; r < rows; r += blockDim.x)
        out[r] = keys[r] == 0 ? 0 : int32_t(~uint32_t(keys[r] & 0xffffffffu));
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

__global__ void read_kernel(const float4* p, int64_t n, float* sink) {
    float s = 0.0f;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float4 v = p[i];
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 12345.678f) *sink = s;  // keeps the loads
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

void rope_store_kv(DataType t, void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, float linear_factor,
                   const Batch& batch, void* kv_pool, int32_t layer, const KvLayout& kv, cudaStream_t s) {
    if (batch.num_tokens == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        launch_early(rope_store_kv_kernel<T>, batch.num_tokens, 256, 0, s, static_cast<T*>(qkv), heads, kv_heads, head_dim,
                     linear_factor, batch, static_cast<T*>(kv_pool), layer, kv);
    });
    launched("rope_store_kv");
}

int32_t prompt_query_rows(DataType t, int32_t head_dim, int32_t block_size) {
    return flash_prompt_attention_covers(t, head_dim, block_size) ? flash_query_rows(head_dim) : kQueryTile;
}

void attention(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& batch,
               const void* kv_pool, int32_t layer, const KvLayout& kv, void* out, int32_t max_len, float* partial,
               int64_t partial_floats, cudaStream_t s) {
    if (batch.num_tokens == 0) return;
    if (head_dim > kMaxHeadDim || head_dim % 8 != 0)
        throw std::runtime_error("attention: head_dim must be a multiple of 8 up to 256 (got " + std::to_string(head_dim) + ")");
    const int32_t group = heads / kv_heads;
    if (group > kMaxGroup) throw std::runtime_error("attention: more than 8 query heads per key/value head");
    if (flash_attention_prompt(t, qkv, heads, kv_heads, head_dim, batch, kv_pool, layer, kv, out, s)) return;
    if (batch.num_query_tiles > 0 && kv.block_size % 32 == 0 && t != DataType::F32 && head_dim <= 128) {
        // Prompts: query tiles sharing each key/value tile (16-bit types; fp32 tiles would not fit
        // in shared memory, and fp32 is for checking, not speed).
        dispatch(t, [&](auto tag) {
            using T = decltype(tag);
            if constexpr (!std::is_same_v<T, float>) {
            const dim3 grid(unsigned(batch.num_query_tiles), unsigned(heads));
            auto launch = [&](auto kernel) {
                kernel<<<grid, 128, 0, s>>>(static_cast<const T*>(qkv), heads, kv_heads, head_dim, batch,
                                            static_cast<const T*>(kv_pool), layer, kv, static_cast<T*>(out));
            };
            if (head_dim == 128) launch(attention_prefill_kernel<T, 128>);
            else if (head_dim == 64) launch(attention_prefill_kernel<T, 64>);
            else launch(attention_prefill_kernel<T, 0>);
            }
        });
        launched("attention (prompt)");
        return;
    }
    // Enough blocks to fill the GPU: split long contexts when there are few tokens (decoding).
    // The split blocks of each token and head count themselves in a ticket at the buffer's end.
    const int64_t blocks = int64_t(batch.num_tokens) * kv_heads;
    int32_t splits = int32_t(std::max<int64_t>(1, std::min<int64_t>({(512 + blocks - 1) / blocks, (max_len + kTile - 1) / kTile,
                                                                      int64_t(kMaxSplits)})));
    if (blocks > kAttentionTickets) splits = 1;
    auto* tickets = reinterpret_cast<int32_t*>(partial + partial_floats - kAttentionTickets);
    partial_floats -= kAttentionTickets;
    while (splits > 1 && int64_t(batch.num_tokens) * heads * splits * (head_dim + 2) > partial_floats) --splits;
    // Spans are whole tiles so that a 32-position tile never crosses a cache block.
    int32_t span = (max_len + splits - 1) / splits;
    span = (span + kTile - 1) / kTile * kTile;
    splits = (max_len + span - 1) / span;
    if (kv.block_size % 32 != 0) throw std::runtime_error("attention: the KV block size must be a multiple of 32");
    const dim3 grid(unsigned(batch.num_tokens), unsigned(kv_heads), unsigned(splits));
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        auto run = [&](auto g) {
            constexpr int G = decltype(g)::value;
            auto launch = [&](auto kernel) {
                launch_early(kernel, grid, 32 * kAttentionWarps, 0, s, static_cast<const T*>(qkv), heads, kv_heads, head_dim,
                             batch, static_cast<const T*>(kv_pool), layer, kv, span, static_cast<T*>(out), partial, tickets);
            };
            // Early loads where the registers they need are worth it: small groups, few blocks.
            constexpr bool kEarly = G <= 2 && sizeof(T) == 2;
            const bool early = kEarly && batch.decode && blocks * splits <= 512;
            if (head_dim == 128 && early) launch(attention_split_kernel<T, G, 128, kEarly>);
            else if (head_dim == 128) launch(attention_split_kernel<T, G, 128, false>);
            else if (head_dim == 64 && early) launch(attention_split_kernel<T, G, 64, kEarly>);
            else if (head_dim == 64) launch(attention_split_kernel<T, G, 64, false>);
            else launch(attention_split_kernel<T, G, 0, false>);
        };
        switch (group) {
        case 1: run(std::integral_constant<int, 1>{}); break;
        case 2: run(std::integral_constant<int, 2>{}); break;
        case 3: run(std::integral_constant<int, 3>{}); break;
        case 4: run(std::integral_constant<int, 4>{}); break;
        case 5: run(std::integral_constant<int, 5>{}); break;
        case 6: run(std::integral_constant<int, 6>{}); break;
        case 7: run(std::integral_constant<int, 7>{}); break;
        default: run(std::integral_constant<int, 8>{}); break;
        }
        launched("attention");
    });
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

void argmax_rows(const float* logits, int32_t rows, int64_t cols, int32_t* out, unsigned long long* keys, cudaStream_t s) {
    if (rows == 0) return;
    check(cudaMemsetAsync(keys, 0, std::size_t(rows) * sizeof *keys, s), "cudaMemsetAsync");
    const dim3 grid(unsigned((cols + kArgmaxChunk - 1) / kArgmaxChunk), unsigned(rows));
    launch_early(argmax_kernel, grid, 256, 0, s, logits, cols, keys);
    launch_early(argmax_index_kernel, 1, 256, 0, s, keys, rows, out);
    launched("argmax_rows");
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

double read_bandwidth(void* buffer, int64_t bytes, cudaStream_t s) {
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    const int64_t n = bytes / 16;
    float* sink = static_cast<float*>(buffer);
    read_kernel<<<1024, 512, 0, s>>>(static_cast<const float4*>(buffer), n, sink);  // warm-up
    float best = 1e30f;
    for (int rep = 0; rep < 5; ++rep) {
        check(cudaEventRecord(start, s), "cudaEventRecord");
        read_kernel<<<2048, 512, 0, s>>>(static_cast<const float4*>(buffer), n, sink);
        check(cudaEventRecord(stop, s), "cudaEventRecord");
        check(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0;
        check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        best = std::min(best, ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return double(n) * 16.0 / (double(best) / 1000.0);
}

}  // namespace lumen::cuda
