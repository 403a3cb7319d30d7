// Causal attention over the paged KV cache: decode (split along the keys; over a cache of codes in
// attention_codes.cu) and prompt tiles (the fallback where flash_attention*.cu does not cover the
// shape, and every prompt over a cache of codes). CPU reference: CpuBackend::attention
// (engine/backend/cpu_backend.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "engine/util/error.h"
#include "kernels/attention_split.cuh"
#include "kernels/device_common.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/kv_quant.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

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
    const int32_t t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
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
            float correction;
            p_sh[warp][g][lane] = softmax_step(s[g], valid, m[g], l[g], correction);
#pragma unroll
            for (int j = 0; j < kAccDims; ++j) acc[g][j] *= correction;
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

    finish_split<T, G, DC, kPieceLanes>(m, l, acc, D, heads, kv_heads, out, partial, tickets);
}

// Prompt attention: a block takes up to 32 consecutive tokens of one sequence and one query head,
// and streams the keys and values before them through shared memory 32 positions at a time, so
// each cached row is read once per tile of queries rather than once per query. Warps own 8
// queries each; lanes score one position each, then accumulate 4 (of 128) output dimensions.
constexpr int kQueryTile = 32;
// With BITS (a cache of codes) the tiles are dequantized on their way into shared memory.
template <class T, int DC, int BITS>
__global__ void __launch_bounds__(128)
attention_prefill_kernel(const T* qkv, int32_t heads, int32_t kv_heads, int32_t d_runtime, Batch b, const void* pool,
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
        // Rows past the last query's position were never written: zeros, not whatever is there.
        const int rows = min(32, last_pos - base + 1);
        if constexpr (BITS == 0) {
            const T* k_src = static_cast<const T*>(pool) + kv_offset(kv, block, layer, 0, kvh, slot0);
            const T* v_src = static_cast<const T*>(pool) + kv_offset(kv, block, layer, 1, kvh, slot0);
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
        } else {
            const int64_t row_bytes = int64_t(D) * BITS / 8;
            const uint8_t* parts[2] = {kv_part(static_cast<const uint8_t*>(pool), kv, block, layer, 0, kvh),
                                       kv_part(static_cast<const uint8_t*>(pool), kv, block, layer, 1, kvh)};
            for (int i = threadIdx.x; i < 2 * 32 * D / 8; i += blockDim.x) {
                const int which = i / (32 * D / 8), r = i % (32 * D / 8) / (D / 8), c = (i % (D / 8)) * 8;
                float x[8] = {};
                if (r < rows) {
                    eight_codes<BITS>(parts[which] + (slot0 + r) * row_bytes + c * BITS / 8, x);
                    const float2 sz = __half22float2(kv_params(parts[which], kv)[slot0 + r]);
#pragma unroll
                    for (int e = 0; e < 8; ++e) x[e] = x[e] * sz.x + sz.y;
                }
                T* dst = which == 0 ? &k_sh[r][c] : &v_sh[r][c];
#pragma unroll
                for (int e = 0; e < 8; ++e) dst[e] = from_f<T>(x[e]);
            }
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


}  // namespace

int32_t prompt_query_rows(DataType t, const KvLayout& kv) {
    return kv.bits == 0 && flash_prompt_attention_covers(t, kv.head_dim, kv.block_size) ? flash_query_rows(kv.head_dim) : kQueryTile;
}

void attention(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& batch,
               void* kv_pool, int32_t layer, const KvLayout& kv, void* out, int32_t max_len, float* partial,
               int64_t partial_floats, cudaStream_t s) {
    if (batch.num_tokens == 0) return;
    if (head_dim > kMaxHeadDim || head_dim % 8 != 0)
        throw lumen::Error("attention: head_dim must be a multiple of 8 up to 256 (got " + std::to_string(head_dim) + ")");
    const int32_t group = heads / kv_heads;
    if (group > kMaxGroup) throw lumen::Error("attention: more than 8 query heads per key/value head");
    if (kv.bits != 0 && kv.bits != 8 && kv.bits != 4) throw lumen::Error("attention: a KV cache of codes has 8 or 4 bits");
    const bool prompt_tiles = batch.num_query_tiles > 0 && kv.block_size % 32 == 0 && t != DataType::F32 && head_dim <= 128;
    // A cache of codes: the batch's keys and values go in here, or in the split kernel of a decode step.
    const bool split_stores = kv.bits && batch.decode && !prompt_tiles;
    if (kv.bits && !split_stores) store_codes(t, qkv, heads, kv_heads, head_dim, batch, kv_pool, layer, kv, s);
    if (kv.bits == 0 && flash_attention_prompt(t, qkv, heads, kv_heads, head_dim, batch, kv_pool, layer, kv, out, s)) return;
    if (prompt_tiles) {
        // Prompts: query tiles sharing each key/value tile (16-bit types; fp32 tiles would not fit
        // in shared memory, and fp32 is for checking, not speed).
        dispatch(t, [&](auto tag) {
            using T = decltype(tag);
            if constexpr (!std::is_same_v<T, float>) {
            const dim3 grid(unsigned(batch.num_query_tiles), unsigned(heads));
            auto launch = [&](auto kernel) {
                kernel<<<grid, 128, 0, s>>>(static_cast<const T*>(qkv), heads, kv_heads, head_dim, batch, kv_pool, layer, kv,
                                            static_cast<T*>(out));
            };
            auto with_bits = [&](auto bits) {
                constexpr int B = decltype(bits)::value;
                if (head_dim == 128) launch(attention_prefill_kernel<T, 128, B>);
                else if (head_dim == 64) launch(attention_prefill_kernel<T, 64, B>);
                else launch(attention_prefill_kernel<T, 0, B>);
            };
            if (kv.bits == 8) with_bits(std::integral_constant<int, 8>{});
            else if (kv.bits == 4) with_bits(std::integral_constant<int, 4>{});
            else with_bits(std::integral_constant<int, 0>{});
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
    if (kv.block_size % 32 != 0) throw lumen::Error("attention: the KV block size must be a multiple of 32");
    const dim3 grid(unsigned(batch.num_tokens), unsigned(kv_heads), unsigned(splits));
    if (kv.bits) {
        attention_split_codes(t, qkv, heads, kv_heads, head_dim, batch, kv_pool, layer, kv, group, grid, span, split_stores, out, partial,
                              tickets, s);
        return;
    }
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

}  // namespace lumen::cuda
