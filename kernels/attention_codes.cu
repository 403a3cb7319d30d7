// Decode attention over a KV cache of 8- or 4-bit codes, and the store of a batch's keys and values
// into one. CPU reference: CpuBackend::attention and store_kv_row (engine/backend/cpu_backend.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/attention_split.cuh"
#include "kernels/kv_quant.cuh"

namespace lumen::cuda::detail {
namespace {

// attention_split_kernel over a cache of BITS-bit codes (the same blocks, tiles and merge). A key's
// score is scale · (q · codes) + zero · Σq and the values add up (p · scale) · codes, with Σ p · zero
// kept aside, so each code becomes a float once and is not scaled on its own. With `stores` (a
// decode step) the block holding the token's own position first quantizes the token's key and
// value rows, which the q/k/v product left rotated in qkv, into the cache.
template <class T, int G, int DC, int BITS>
__global__ void __launch_bounds__(32 * kAttentionWarps)
attention_split_codes_kernel(const T* qkv, int32_t heads, int32_t kv_heads, int32_t d_runtime, Batch b, uint8_t* pool,
                             int32_t layer, KvLayout kv, int32_t span, int32_t stores, T* out, float* partial, int32_t* tickets) {
    let_next_start();
    const int32_t D = DC > 0 ? DC : d_runtime;
    constexpr int kDims = DC > 0 ? (DC + 31) / 32 : kMaxHeadDim / 32;
    // Heads of 64 and 128: the lanes of a warp split each value row in pieces of 8 codes, and each
    // lane's key row comes in 16-byte loads.
    constexpr bool kRowPieces = DC == 64 || DC == 128;
    constexpr int kPieceLanes = kRowPieces ? DC / 8 : 1;
    constexpr int kRowsAtOnce = 32 / kPieceLanes;
    constexpr int kPieces = kRowPieces ? 32 / kRowsAtOnce : 1;
    constexpr int kAccDims = kRowPieces ? 8 : kDims;
    constexpr int kChunks = kRowPieces ? DC * BITS / 8 / 16 : 1;
    using Piece = std::conditional_t<BITS == 8, uint2, uint32_t>;  // 8 codes
    const int32_t t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // The batch (positions, block tables) was copied before any kernel of this forward ran.
    const int32_t len = b.positions[t] + 1;
    const int32_t first = split * span, last = min(len, first + span);
    const int64_t width = int64_t(heads + 2 * kv_heads) * D;
    const int64_t row_bytes = int64_t(D) * BITS / 8;
    const int32_t* table = b.block_tables + int64_t(b.token_seq[t]) * b.max_blocks;
    const int sub = lane / kPieceLanes, c = (lane % kPieceLanes) * 8;

    // This lane's key row and value pieces of the tile at hand; rows past the tile's end stay zero.
    uint4 chunk[kChunks];
    float2 key_params = make_float2(0.0f, 0.0f);
    Piece pieces[kPieces];
    __half2 piece_params[kPieces];
    auto clear_tile = [&] {
#pragma unroll
        for (int i = 0; i < kPieces; ++i) pieces[i] = Piece{}, piece_params[i] = __floats2half2_rn(0.0f, 0.0f);
    };
    auto load_tile = [&](int32_t base, int32_t lo, int32_t hi) {  // rows [lo, hi) of the tile at `base`
        const int32_t block = table[base / kv.block_size], slot0 = base % kv.block_size;
        const uint8_t* k_part = kv_part(static_cast<const uint8_t*>(pool), kv, block, layer, 0, kvh);
        const uint8_t* v_part = kv_part(static_cast<const uint8_t*>(pool), kv, block, layer, 1, kvh);
        if constexpr (kRowPieces) {
#pragma unroll
            for (int i = 0; i < kPieces; ++i) {
                const int row = i * kRowsAtOnce + sub;
                if (row >= lo && row < hi) {
                    pieces[i] = *reinterpret_cast<const Piece*>(v_part + (slot0 + row) * row_bytes + c * BITS / 8);
                    piece_params[i] = kv_params(v_part, kv)[slot0 + row];
                }
            }
            if (lane >= lo && lane < hi) {
#pragma unroll
                for (int i = 0; i < kChunks; ++i) chunk[i] = reinterpret_cast<const uint4*>(k_part + (slot0 + lane) * row_bytes)[i];
                key_params = __half22float2(kv_params(k_part, kv)[slot0 + lane]);
            }
        }
    };
    // A decode step: each warp's first tile, all but the token's own row (which this kernel stores),
    // is loaded before waiting for the q/k/v product, so that those loads overlap it.
    const int32_t base0 = first + warp * 32;
    int32_t early = 0;
    if (kRowPieces && stores && base0 < last) {
        clear_tile();
        early = min(len - 1 - base0, min(32, last - base0));
        if (early > 0) load_tile(base0, 0, early);
    }
    wait_for_previous();

    __shared__ __align__(16) float q_sh[G][DC > 0 ? DC : kMaxHeadDim];
    __shared__ float q_sum_sh[G];
    __shared__ float p_sh[kAttentionWarps][G][32];
    if (stores && first <= len - 1 && len - 1 < first + span && warp < 2) {
        const int32_t p = len - 1, slot = p % kv.block_size;
        uint8_t* part = kv_part(pool, kv, table[p / kv.block_size], layer, warp, kvh);
        quantize_row(qkv + int64_t(t) * width + int64_t(heads + warp * kv_heads + kvh) * D, D, BITS, part + slot * row_bytes,
                     kv_params(part, kv) + slot, lane);
    }
    const float scale = rsqrtf(float(D));
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        const int g = i / D, d = i % D;
        q_sh[g][d] = to_f(qkv[int64_t(t) * width + int64_t(kvh * G + g) * D + d]) * scale;
    }
    __syncthreads();  // the stored rows are read back by this block only
    for (int g = warp; g < G; g += kAttentionWarps) {
        float sum = 0.0f;
        for (int d = lane; d < D; d += 32) sum += q_sh[g][d];
        sum = warp_sum(sum);
        if (lane == 0) q_sum_sh[g] = sum;
    }
    __syncthreads();

    float m[G], l[G], acc[G][kAccDims], zero_acc[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
        zero_acc[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < kAccDims; ++j) acc[g][j] = 0.0f;
    }
    for (int32_t base = base0; base < last; base += kTile) {
        const int32_t block = table[base / kv.block_size], slot0 = base % kv.block_size;
        const uint8_t* k_part = kv_part(static_cast<const uint8_t*>(pool), kv, block, layer, 0, kvh);
        const uint8_t* v_part = kv_part(static_cast<const uint8_t*>(pool), kv, block, layer, 1, kvh);
        const __half2* v_params = kv_params(v_part, kv) + slot0;
        const int32_t count = min(32, last - base);
        const bool valid = lane < count;
        // Values and keys in flight together (the first tile's early rows already here).
        if (base == base0 && early > 0) {
            load_tile(base, early, count);
        } else {
            clear_tile();
            load_tile(base, 0, count);
        }
        float s[G];
#pragma unroll
        for (int g = 0; g < G; ++g) s[g] = 0.0f;
        if (valid) {
            const float2 kp = kRowPieces ? key_params : __half22float2(kv_params(k_part, kv)[slot0 + lane]);
            float dot[G];
#pragma unroll
            for (int g = 0; g < G; ++g) dot[g] = 0.0f;
            if constexpr (kRowPieces) {
#pragma unroll
                for (int i = 0; i < kChunks; ++i) {
                    const uint32_t words[4] = {chunk[i].x, chunk[i].y, chunk[i].z, chunk[i].w};
#pragma unroll
                    for (int w = 0; w < 4; ++w)
#pragma unroll
                        for (int e = 0; e < 32 / BITS; ++e) {
                            const int d = (i * 4 + w) * (32 / BITS) + e;
                            const float code = code_at<BITS>(words[w], e);
#pragma unroll
                            for (int g = 0; g < G; ++g) dot[g] += q_sh[g][d] * code;
                        }
                }
            } else {
                const uint8_t* k = k_part + (slot0 + lane) * row_bytes;
                for (int d = 0; d < D; d += 8) {
                    float codes[8];
                    eight_codes<BITS>(k + d * BITS / 8, codes);
#pragma unroll
                    for (int g = 0; g < G; ++g)
#pragma unroll
                        for (int e = 0; e < 8; ++e) dot[g] += q_sh[g][d + e] * codes[e];
                }
            }
#pragma unroll
            for (int g = 0; g < G; ++g) s[g] = kp.x * dot[g] + kp.y * q_sum_sh[g];
        }
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float correction;
            p_sh[warp][g][lane] = softmax_step(s[g], valid, m[g], l[g], correction);
#pragma unroll
            for (int j = 0; j < kAccDims; ++j) acc[g][j] *= correction;
            zero_acc[g] *= correction;
        }
        __syncwarp();
        if constexpr (kRowPieces) {
#pragma unroll
            for (int i = 0; i < kPieces; ++i) {
                float codes[8];
                eight_codes<BITS>(reinterpret_cast<const uint8_t*>(&pieces[i]), codes);
                const float2 vp = __half22float2(piece_params[i]);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    const float pr = p_sh[warp][g][i * kRowsAtOnce + sub];
                    const float weight = pr * vp.x;
                    zero_acc[g] += pr * vp.y;
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[g][j] += weight * codes[j];
                }
            }
        } else {
            const int dims = (D + 31) / 32;
            for (int32_t i = 0; i < count; ++i) {
                const float2 vp = __half22float2(v_params[i]);
                const uint8_t* v = v_part + (slot0 + i) * row_bytes;
#pragma unroll
                for (int j = 0; j < kDims; ++j) {
                    const int d = lane + 32 * j;
                    if (j >= dims || d >= D) break;
                    const int code = BITS == 8 ? v[d] : (v[d / 2] >> (4 * (d % 2))) & 15;
                    const float value = float(code) * vp.x + vp.y;
#pragma unroll
                    for (int g = 0; g < G; ++g) acc[g][j] += p_sh[warp][g][i] * value;
                }
            }
        }
        __syncwarp();
    }
    // Each lane's share of Σ p · zero belongs to every dimension of its rows.
    if constexpr (kRowPieces)
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[g][j] += zero_acc[g];
    finish_split<T, G, DC, kPieceLanes>(m, l, acc, D, heads, kv_heads, out, partial, tickets);
}

// Quantizes the batch's key and value rows (rotated in qkv) into a cache of codes: a block per
// token and key/value head, its first warp the key, its second the value.
template <class T>
__global__ void __launch_bounds__(64)
store_codes_kernel(const T* qkv, int32_t heads, int32_t kv_heads, int32_t D, Batch b, uint8_t* pool, int32_t layer, KvLayout kv) {
    let_next_start();
    wait_for_previous();
    const int32_t t = blockIdx.x, kvh = blockIdx.y, which = threadIdx.x >> 5;
    const int32_t p = b.positions[t], slot = p % kv.block_size;
    const int32_t block = b.block_tables[int64_t(b.token_seq[t]) * b.max_blocks + p / kv.block_size];
    uint8_t* part = kv_part(pool, kv, block, layer, which, kvh);
    const int64_t width = int64_t(heads + 2 * kv_heads) * D;
    quantize_row(qkv + int64_t(t) * width + int64_t(heads + which * kv_heads + kvh) * D, D, kv.bits, part + slot * kv_row_bytes(kv),
                 kv_params(part, kv) + slot, int(threadIdx.x & 31));
}

}  // namespace

void attention_split_codes(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& batch,
                           void* pool, int32_t layer, const KvLayout& kv, int32_t group, dim3 grid, int32_t span, bool stores,
                           void* out, float* partial, int32_t* tickets, cudaStream_t s) {
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        auto run = [&](auto g, auto bits) {
            constexpr int G = decltype(g)::value, B = decltype(bits)::value;
            auto launch = [&](auto kernel) {
                launch_early(kernel, grid, 32 * kAttentionWarps, 0, s, static_cast<const T*>(qkv), heads, kv_heads, head_dim, batch,
                             static_cast<uint8_t*>(pool), layer, kv, span, int32_t(stores), static_cast<T*>(out), partial, tickets);
            };
            if (head_dim == 128) launch(attention_split_codes_kernel<T, G, 128, B>);
            else if (head_dim == 64) launch(attention_split_codes_kernel<T, G, 64, B>);
            else launch(attention_split_codes_kernel<T, G, 0, B>);
        };
        auto with_group = [&](auto bits) {
            switch (group) {
            case 1: run(std::integral_constant<int, 1>{}, bits); break;
            case 2: run(std::integral_constant<int, 2>{}, bits); break;
            case 3: run(std::integral_constant<int, 3>{}, bits); break;
            case 4: run(std::integral_constant<int, 4>{}, bits); break;
            case 5: run(std::integral_constant<int, 5>{}, bits); break;
            case 6: run(std::integral_constant<int, 6>{}, bits); break;
            case 7: run(std::integral_constant<int, 7>{}, bits); break;
            default: run(std::integral_constant<int, 8>{}, bits); break;
            }
        };
        if (kv.bits == 8) with_group(std::integral_constant<int, 8>{});
        else with_group(std::integral_constant<int, 4>{});
    });
    launched("attention (KV codes)");
}

void store_codes(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& batch, void* pool,
                 int32_t layer, const KvLayout& kv, cudaStream_t s) {
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        launch_early(store_codes_kernel<T>, dim3(unsigned(batch.num_tokens), unsigned(kv_heads)), 64, 0, s, static_cast<const T*>(qkv),
                     heads, kv_heads, head_dim, batch, static_cast<uint8_t*>(pool), layer, kv);
    });
    launched("storing keys and values as codes");
}

}  // namespace lumen::cuda::detail
