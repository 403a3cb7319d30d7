// 4-bit weights on the tensor cores (W4A16): products of up to 64 rows read each 4-bit code once,
// expand it to 16 bits in registers and multiply with mma.sync, with the same steps folded in
// after as the GEMV (gemv_epilogue.cuh); longer prompts expand whole weights for cuBLASLt. CPU
// reference: matmul over weight_row_f32 (engine/backend/cpu_math.cpp) and CpuBackend::linear.
//
// The codes are re-laid at upload (tile_int4_codes) so that each lane's 16-byte load holds exactly
// the A fragments of mma.m16n8k16 it needs for one block of 64 inputs (four k-tiles). A product
// sums over its inputs in any order, so the inputs are dealt to the fragments in the order that
// lets each lane read its activations in one piece: lane l = 4g + c takes inputs 16c..16c+15 of the
// block, k-tile i's fragment columns 2c + e and 2c + 8 + e being inputs 16c + 4i + e and
// 16c + 4i + 2 + e. For the rows 16t..16t+15, the lane's word of k-tile i holds, in nibble pairs
// (bits s and s + 16, s = 0, 4, 8, 12), fragment registers 0-3: rows g and g + 8, the first and
// the second pair of its inputs. A pair becomes two exact 16-bit values with one lop3 (the code in
// the low mantissa bits of 1024.0 in fp16, of 128.0 in bf16), then (v - (base + zero)) · scale.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "engine/util/thread_pool.h"
#include "kernels/device_common.cuh"
#include "kernels/device_info.h"
#include "kernels/gemv_epilogue.cuh"
#include "kernels/mma.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

constexpr int kDepth = 4;   // 16-byte loads in flight per lane and tile
// Warps of a block, splitting the inputs of one tile of rows: eight for a single tile and up to 16
// rows of x (more loads in flight where a matrix has few tiles of rows), else four (registers, and
// the shared memory that adds their sums).
template <int NT, int R> constexpr int kWarpsFor = NT <= 2 && R == 1 ? 8 : 4;

// Word index of (row tile t, block of 64 inputs b, lane, k-tile i of the block) in the re-laid
// codes: each block's 32 lanes hold their four words of it together (a 16-byte load).
__host__ __device__ __forceinline__ int64_t tiled_index(int64_t t, int64_t b, int lane, int i, int64_t blocks) {
    return ((t * blocks + b) * 32 + lane) * 4 + i;
}
// The input of fragment register `reg`'s element e (0, 1) of lane c's k-tile i in block b.
__host__ __device__ __forceinline__ int64_t tiled_input(int64_t b, int c, int i, int reg, int e) {
    return 64 * b + 16 * c + 4 * i + 2 * (reg >> 1) + e;
}

template <class T> struct Pair;
template <> struct Pair<__half> {
    using type = __half2;
    static constexpr uint32_t kMagic = 0x64006400u;  // 1024.0 twice
    static constexpr float kBase = 1024.0f;
};
template <> struct Pair<__nv_bfloat16> {
    using type = __nv_bfloat162;
    static constexpr uint32_t kMagic = 0x43004300u;  // 128.0 twice
    static constexpr float kBase = 128.0f;
};

__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(d) : "r"(a), "r"(b), "r"(c));  // (a & b) | c
    return d;
}

// Scales and zeros of one group for a lane's two rows, as 16-bit pairs.
template <class T>
struct GroupTerms {
    typename Pair<T>::type offset[2], scale[2];  // base + zero, scale; rows g and g + 8
};

template <class T>
__device__ __forceinline__ GroupTerms<T> group_terms(const T* scales, const uint8_t* zeros, int64_t groups, int64_t row0, int64_t g) {
    using T2 = typename Pair<T>::type;
    GroupTerms<T> terms;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int64_t at = (row0 + 8 * h) * groups + g;
        const T s = scales[at], o = from_f<T>(Pair<T>::kBase + float(zeros[at]));
        terms.scale[h] = T2{s, s};
        terms.offset[h] = T2{o, o};
    }
    return terms;
}

// A fragment registers of one k-tile from a lane's word: (code - zero) · scale, exact until the
// product with the scale (rounded to T, as a weight expanded to T would be).
template <class T>
__device__ __forceinline__ void expand(uint32_t word, const GroupTerms<T>& terms, uint32_t (&a)[4]) {
    using T2 = typename Pair<T>::type;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t raw = lop3_and_or(word >> (4 * i), 0x000F000Fu, Pair<T>::kMagic);
        T2 v = *reinterpret_cast<const T2*>(&raw);
        v = __hmul2(__hsub2(v, terms.offset[i & 1]), terms.scale[i & 1]);
        a[i] = *reinterpret_cast<const uint32_t*>(&v);
    }
}

struct Int4Params {
    const uint32_t* codes;  // re-laid (tile_int4_codes)
    const void* scales;     // [rows, groups] of T
    const uint8_t* zeros;   // [rows, groups]
    int64_t group_size;
    int32_t tokens;         // rows of x (at most 8 · NT)
};

// out = x · wᵀ for `tokens` rows of x (up to 8 · NT) and one tile of 16 weight rows per block (two
// tiles when gated or rotated), the block's warps each taking a share of the inputs and adding
// their sums through shared memory; warp 0 finishes as the GEMV does.
template <class T, class O, int NT, bool kGated, bool kAccumulate, bool kRope>
__global__ void __launch_bounds__(32 * kWarpsFor<NT, kGated || kRope ? 2 : 1>) w4a16_kernel(GemvParams p, Int4Params q) {
    constexpr int kWarps = kWarpsFor<NT, kGated || kRope ? 2 : 1>;
    // Up to 16 rows of x, a whole pass's activations are requested at once, right after its codes;
    // more rows, one block's at a time (registers).
    constexpr bool kAllAtOnce = NT <= 2;
    let_next_start();
    constexpr int R = kGated || kRope ? 2 : 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, g = lane >> 2, c = lane & 3;
    const int64_t in = p.in, groups = in / q.group_size;
    // This block's tiles of rows: R = 1, rows 16u..; gated, gate rows 16u.. and up rows out_features + 16u..;
    // rotated, pairs p0..p0+15 of one head: rows head·D + p0.. and head·D + D/2 + p0...
    const int64_t unit = blockIdx.x;
    const int32_t half = p.rope.head_dim / 2;
    int64_t head = 0, pair0 = 0, tile_row[R];
    if constexpr (kRope) {
        head = unit / (half / 16), pair0 = (unit % (half / 16)) * 16;
        tile_row[0] = head * p.rope.head_dim + pair0, tile_row[1] = tile_row[0] + half;
    } else if constexpr (kGated) {
        tile_row[0] = unit * 16, tile_row[1] = p.out_features + unit * 16;
    } else {
        tile_row[0] = unit * 16;
    }
    const T* scales = static_cast<const T*>(q.scales);
    const T* x = static_cast<const T*>(p.x);
    float acc[R][NT][4] = {};
    // This warp's blocks of 64 inputs.
    const int64_t blocks = in / 64;
    const int64_t first = blocks * warp / kWarps, last = blocks * (warp + 1) / kWarps;
    bool waited = false;
    for (int64_t b0 = first; b0 < last; b0 += kDepth) {
        // Weights first (they may be read before the previous kernel ends): codes, and the scale and
        // zero of the group holding this lane's 16 inputs of each block.
        uint4 words[R][kDepth];
        T scale_raw[R][kDepth][2];
        uint8_t zero_raw[R][kDepth][2];
#pragma unroll
        for (int d = 0; d < kDepth; ++d)
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int64_t b = b0 + d;
                if (b >= last) continue;
                words[r][d] = __ldg(reinterpret_cast<const uint4*>(q.codes + tiled_index(tile_row[r] / 16, b, lane, 0, blocks)));
                const int64_t group = (64 * b + 16 * c) / q.group_size;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int64_t at = (tile_row[r] + g + 8 * h) * groups + group;
                    scale_raw[r][d][h] = scales[at];
                    zero_raw[r][d][h] = q.zeros[at];
                }
            }
        if (!waited) wait_for_previous(), waited = true;
        // Activations: this lane's 16 inputs of a block for token nt·8 + g, as eight pairs.
        auto load_x = [&](int64_t b, uint32_t (&xb)[NT][8]) {
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int token = nt * 8 + g;
                uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
                if (token < q.tokens && b < last) {
                    const uint4* at = reinterpret_cast<const uint4*>(x + token * in + 64 * b + 16 * c);
                    lo = at[0], hi = at[1];
                }
                xb[nt][0] = lo.x, xb[nt][1] = lo.y, xb[nt][2] = lo.z, xb[nt][3] = lo.w;
                xb[nt][4] = hi.x, xb[nt][5] = hi.y, xb[nt][6] = hi.z, xb[nt][7] = hi.w;
            }
        };
        uint32_t xs[kAllAtOnce ? kDepth : 1][NT][8];
        if constexpr (kAllAtOnce)
#pragma unroll
            for (int d = 0; d < kDepth; ++d) load_x(b0 + d, xs[d]);
#pragma unroll
        for (int d = 0; d < kDepth; ++d) {
            const int64_t b = b0 + d;
            if (b >= last) break;
            if constexpr (!kAllAtOnce) load_x(b, xs[0]);
            uint32_t (&xb)[NT][8] = xs[kAllAtOnce ? d : 0];
            GroupTerms<T> terms[R];
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    using T2 = typename Pair<T>::type;
                    const T sv = scale_raw[r][d][h], o = from_f<T>(Pair<T>::kBase + float(zero_raw[r][d][h]));
                    terms[r].scale[h] = T2{sv, sv};
                    terms[r].offset[h] = T2{o, o};
                }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                uint32_t a[R][4];
#pragma unroll
                for (int r = 0; r < R; ++r) expand<T>(reinterpret_cast<const uint32_t*>(&words[r][d])[i], terms[r], a[r]);
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int r = 0; r < R; ++r) Mma<T>::run(acc[r][nt], a[r], xb[nt][2 * i], xb[nt][2 * i + 1]);
            }
        }
    }
    if (!waited) wait_for_previous();
    // The warps' sums added in shared memory, then written by warp 0.
    __shared__ float partial[kWarps - 1][R * NT * 4][32];
    if (warp > 0)
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) partial[warp - 1][(r * NT + nt) * 4 + e][lane] = acc[r][nt][e];
    __syncthreads();
    if (warp > 0) return;
#pragma unroll
    for (int w = 0; w < kWarps - 1; ++w)
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[r][nt][e] += partial[w][(r * NT + nt) * 4 + e][lane];
    // Fragment element e of n-tile nt: row g + 8·(e / 2), token nt·8 + 2c + e % 2.
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int token = nt * 8 + 2 * c + (e & 1);
            if (token >= q.tokens) continue;
            const int64_t offset = g + 8 * (e >> 1);
            int64_t row[R];
            float v[R];
#pragma unroll
            for (int r = 0; r < R; ++r) row[r] = tile_row[r] + offset, v[r] = acc[r][nt][e];
            finish_element<T, O, R, kGated, kAccumulate, kRope>(p, token, row, head, pair0 + offset, v);
        }
}

// Whole weights expanded for cuBLASLt: one thread per word, four pairs of 16-bit values written.
template <class T>
__global__ void dequantize_tiled_kernel(const uint32_t* codes, const T* scales, const uint8_t* zeros, int64_t group_size, int64_t rows,
                                        int64_t in, T* out) {
    const int64_t blocks = in / 64, groups = in / group_size, words = rows * in / 8;
    for (int64_t w = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; w < words; w += int64_t(gridDim.x) * blockDim.x) {
        // tiled_index inverted: ((t · blocks + b) · 32 + lane) · 4 + i.
        const int i = int(w % 4), lane = int((w / 4) % 32);
        const int64_t b = (w / 128) % blocks, t = w / (128 * blocks);
        const int g = lane >> 2, c = lane & 3;
        const int64_t row0 = t * 16 + g;
        const GroupTerms<T> terms = group_terms<T>(scales, zeros, groups, row0, (64 * b + 16 * c) / group_size);
        uint32_t a[4];
        expand<T>(codes[w], terms, a);
#pragma unroll
        for (int reg = 0; reg < 4; ++reg)
            *reinterpret_cast<uint32_t*>(out + (row0 + 8 * (reg & 1)) * in + tiled_input(b, c, i, reg, 0)) = a[reg];
    }
}

}  // namespace

bool int4_tiles_fit(int64_t rows, int64_t in, int64_t group_size) {
    return rows % 16 == 0 && in % 64 == 0 && group_size > 0 && group_size % 16 == 0 && in % group_size == 0 && current_device().major >= 8;
}

void tile_int4_codes(const uint32_t* codes, int64_t rows, int64_t in, uint32_t* tiled) {
    const int64_t blocks = in / 64, words_per_row = in / 8;
    ThreadPool::shared().parallel_for(std::size_t(rows / 16), 1, [&](std::size_t begin, std::size_t end) {
        uint8_t nibbles[16][64];  // one block of 16 rows and 64 inputs, unpacked
        for (int64_t t = int64_t(begin); t < int64_t(end); ++t)
            for (int64_t b = 0; b < blocks; ++b) {
                for (int r = 0; r < 16; ++r)
                    for (int w = 0; w < 8; ++w) {
                        const uint32_t word = codes[(t * 16 + r) * words_per_row + b * 8 + w];
                        for (int k = 0; k < 8; ++k) nibbles[r][w * 8 + k] = uint8_t((word >> (4 * k)) & 0xFu);
                    }
                uint32_t* out = tiled + tiled_index(t, b, 0, 0, blocks);
                for (int lane = 0; lane < 32; ++lane)
                    for (int i = 0; i < 4; ++i) {
                        uint32_t word = 0;
                        // Nibble pairs (bits s, s + 16) are fragment registers 0-3 (see the file's comment).
                        for (int reg = 0; reg < 4; ++reg) {
                            const int row = (lane >> 2) + 8 * (reg & 1);
                            const int64_t k = tiled_input(0, lane & 3, i, reg, 0);
                            word |= uint32_t(nibbles[row][k]) << (4 * reg) | uint32_t(nibbles[row][k + 1]) << (4 * reg + 16);
                        }
                        out[lane * 4 + i] = word;
                    }
            }
    });
}

bool w4a16(DataType t, const void* x, int64_t n, int64_t in, const Int4Tiles& w, int64_t out_features, void* out, DataType out_type,
           const GemvOptions& o, cudaStream_t s) {
    if (t == DataType::F32 || n < 1 || n > 64 || !int4_tiles_fit(o.silu_gate ? 2 * out_features : out_features, in, w.group_size)) return false;
    if (!folds(t, n, out_features, out_type, o) || (o.rope && o.rope->head_dim % 32 != 0)) return false;
    if (out_features % 16 != 0) return false;
    const int64_t units = o.rope ? out_features / 32 : out_features / 16;
    GemvParams params{x, in, nullptr, out_features, o.bias, out, o.rope ? *o.rope : RopeStore{}};
    const Int4Params q{w.codes, w.scales, w.zeros, w.group_size, int32_t(n)};
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, float>) {
            auto run = [&](auto out_tag, auto gated, auto accumulate, auto rope, auto tiles) {
                using O = decltype(out_tag);
                launch_early(w4a16_kernel<T, O, decltype(tiles)::value, decltype(gated)::value, decltype(accumulate)::value, decltype(rope)::value>,
                             dim3(unsigned(units)), dim3(32 * kWarpsFor<decltype(tiles)::value, decltype(gated)::value || decltype(rope)::value ? 2 : 1>),
                             0, s, params, q);
            };
            auto by_n = [&](auto... mode) {
                if (n <= 8) run(mode..., std::integral_constant<int, 1>{});
                else if (n <= 16) run(mode..., std::integral_constant<int, 2>{});
                else if (n <= 32) run(mode..., std::integral_constant<int, 4>{});
                else run(mode..., std::integral_constant<int, 8>{});
            };
            with_epilogue<T>(o, out_type, by_n);
        }
    });
    launched("w4a16");
    return true;
}

void dequantize_tiles(DataType t, const Int4Tiles& w, int64_t rows, int64_t in, void* out, cudaStream_t s) {
    const int64_t words = rows * in / 8;
    if (words == 0) return;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, float>) {
            const unsigned blocks = unsigned(std::min<int64_t>((words + 255) / 256, 16384));
            dequantize_tiled_kernel<T><<<blocks, 256, 0, s>>>(w.codes, static_cast<const T*>(w.scales), w.zeros, w.group_size, rows, in,
                                                              static_cast<T*>(out));
        }
    });
    launched("dequantize_tiles");
}

}  // namespace lumen::cuda
