// Attention over whole images on Hopper's warpgroup tensor cores (wgmma), head_dim 64. Built for
// sm_90a alone (wgmma exists nowhere else); flash_attention_full calls it on compute capability
// 9.0 and takes the mma.sync kernel elsewhere.
//
// A block holds 64 queries per warpgroup in shared memory and streams the keys and values through
// a ring of stages, 128 rows at a time, filled by cp.async ahead of use. Each warpgroup computes
// S = Q·Kᵀ (64 x 128, both operands from shared memory), keeps the online softmax in registers and
// computes O += P·V with P straight from the score registers. The partial key tile of an image
// (1025 = 8 · 128 + 1 keys) goes first and alone; the full ones are pipelined: a tile's scores are
// issued before the previous tile's values product, and the softmax runs while that product does.
// Rows are 128 bytes, laid out in the 128-byte swizzle that wgmma reads (16-byte chunk c of row r
// at chunk c ^ (r % 8)); the partial tile is zero-filled past the image's end and read only as
// wide as its valid keys need (16 to 128).
//
// At 13 InternViT tiles this runs at about 270 TFLOP/s (H100), against 200 for the mma.sync
// kernel. What holds it there is the block-wide barrier per tile: the warpgroups wait for their
// scores and take their exponentials in step instead of in turn. FlashAttention-3's design (a
// producer warp loading by TMA, stages handed over by mbarriers, warpgroups scheduled in turn) is
// the next step.
#include <cmath>
#include <type_traits>

#include "kernels/device_common.cuh"
#include "kernels/device_info.h"
#include "kernels/flash_attention.cuh"

namespace lumen::cuda::detail {
namespace {

constexpr int kDim = 64;
constexpr int kRowBytes = kDim * 2;
constexpr int kKeys = 128;
constexpr int kTileBytes = kKeys * kRowBytes;

// Blocks of three warpgroups (192 queries, four stages), one an SM, or of one warpgroup (64
// queries, three stages), two an SM: the launcher takes whichever finishes first in whole waves.
template <int Groups> constexpr int kStages = Groups == 1 ? 3 : 4;
template <int Groups> constexpr int kSharedBytes = Groups * 64 * kRowBytes + kStages<Groups> * 2 * kTileBytes + 1024;

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LUMEN_WGMMA 1
#endif

template <class T> struct Wgmma;
template <> struct Wgmma<__nv_bfloat16> {
#define LUMEN_WGMMA_TYPE "bf16"
#include "kernels/wgmma_products.inc"
#undef LUMEN_WGMMA_TYPE
};
template <> struct Wgmma<__half> {
#define LUMEN_WGMMA_TYPE "f16"
#include "kernels/wgmma_products.inc"
#undef LUMEN_WGMMA_TYPE
};

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(Pending) : "memory"); }
// Keeps the compiler from moving uses of accumulator registers across a fence, an issue or a
// wait: ptxas serializes the products where other instructions touch their accumulators between
// the fence and the wait.
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

__device__ __forceinline__ uint32_t shared_address(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// Byte offset of 16-byte chunk c of row r in a 128-byte-swizzled tile.
__device__ __forceinline__ uint32_t swizzled(int r, int c) { return uint32_t(r * kRowBytes + ((c ^ (r & 7)) << 4)); }

// A shared-memory matrix descriptor for 128-byte-swizzled rows of 128 bytes: 8-row groups 1024
// bytes apart. K-major operands step along k by moving the start 32 bytes; the MN-major one (the
// values) steps by 16 rows.
__device__ __forceinline__ uint64_t descriptor(uint32_t address) {
    return uint64_t((address & 0x3FFFF) >> 4) | uint64_t(1) << 16 | uint64_t(1024 >> 4) << 32 | uint64_t(1) << 62;
}

// The keys a tile is read as: all 128, or the valid ones of the last tile rounded up to a
// product's width.
__device__ __forceinline__ int tile_width(int valid) { return valid > 64 ? 128 : valid > 32 ? 64 : valid > 16 ? 32 : 16; }

// 16 bytes from global to shared memory, zeros where `valid` is false, nothing where `issue` is.
// A predicate rather than a branch: branches that differ between threads while a product is in
// flight make ptxas serialize the products.
__device__ __forceinline__ void copy16_async(uint32_t dst, const void* src, bool valid, bool issue = true) {
    asm volatile("{.reg .pred p; setp.ne.b32 p, %3, 0;\n"
                 "@p cp.async.cg.shared.global [%0], [%1], 16, %2;}" ::"r"(dst),
                 "l"(src), "r"(valid ? 16 : 0), "r"(int(issue)));
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;"); }
template <int Pending>
__device__ __forceinline__ void wait_copies() { asm volatile("cp.async.wait_group %0;" ::"n"(Pending)); }

// The softmax state of a thread's two rows (r and r + 8 of its warp's 16) and its share of their
// output: o[4j..4j+3] are columns 8j + 2·(lane % 4) + {0, 1} of the two rows.
struct Rows {
    float o[32];
    float m[2], l[2];
};

// Issues s = q·kᵀ for NT keys (one commit group).
template <class T, int NT>
__device__ __forceinline__ void issue_scores(float (&s)[NT / 2], uint32_t q, uint32_t k) {
    pin(s);
    wgmma_fence();
    Wgmma<T>::template product<NT, false>(s, descriptor(q), descriptor(k));
#pragma unroll
    for (int kk = 1; kk < kDim / 16; ++kk) Wgmma<T>::template product<NT, true>(s, descriptor(q + 32 * kk), descriptor(k + 32 * kk));
    wgmma_commit();
}

// The online softmax of one tile's scores over NT keys (of which `valid` count), in place: s
// becomes exp2(s·scale_log2 − shift) and m and l move on; `rescale` is what the output so far
// must be multiplied by before this tile's values are added.
template <int NT>
__device__ __forceinline__ void softmax(Rows& st, float (&s)[NT / 2], int valid, float scale_log2, float (&rescale)[2]) {
    pin(s);
    if (valid < NT) {
        const int lane = threadIdx.x & 31;
#pragma unroll
        for (int i = 0; i < NT / 2; ++i)
            if (8 * (i / 4) + 2 * (lane & 3) + (i & 1) >= valid) s[i] = -INFINITY;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = st.m[h];
#pragma unroll
        for (int j = 0; j < NT / 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
        const float shift = mx * scale_log2;  // every tile has a valid key: mx is finite
        rescale[h] = fast_exp2(st.m[h] * scale_log2 - shift);
        st.m[h] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < NT / 8; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float& x = s[4 * j + 2 * h + e];
                x = fast_exp2(fmaf(x, scale_log2, -shift));
                sum += x;
            }
        st.l[h] = st.l[h] * rescale[h] + sum;
    }
}

// The weights as the A fragments of the values product: key chunk j (8 keys) is half of k-step
// j / 2, rows r and r + 8.
template <class T, int NT>
__device__ __forceinline__ void pack_weights(const float (&s)[NT / 2], uint32_t (&p)[NT / 16][4]) {
#pragma unroll
    for (int j = 0; j < NT / 8; ++j) {
        p[j / 2][2 * (j & 1)] = pack2<T>(s[4 * j], s[4 * j + 1]);
        p[j / 2][2 * (j & 1) + 1] = pack2<T>(s[4 * j + 2], s[4 * j + 3]);
    }
}

// o = o · rescale + P·v over NT keys: issued as one commit group and left in flight.
template <class T, int NT>
__device__ __forceinline__ void issue_values(Rows& st, const uint32_t (&p)[NT / 16][4], uint32_t v, const float (&rescale)[2]) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) st.o[4 * j + i] *= rescale[i >> 1];
    pin(st.o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < NT / 16; ++kk) Wgmma<T>::product_rs64(st.o, p[kk], descriptor(v + 16 * kRowBytes * kk));
    wgmma_commit();
    pin(st.o);
}

template <class T, int Groups>
__global__ void __launch_bounds__(Groups * 128, Groups == 1 ? 2 : 1)
wgmma_attention_kernel(const T* qkv, int32_t heads, int64_t group_rows, T* out, float scale_log2) {
#ifdef LUMEN_WGMMA
    constexpr int Stages = kStages<Groups>, Threads = Groups * 128, QueryRows = Groups * 64;
    extern __shared__ unsigned char raw[];
    // Swizzle atoms are 1024-byte aligned.
    const uint32_t base = (shared_address(raw) + 1023) & ~1023u;
    const uint32_t q_sh = base, kv_sh = base + QueryRows * kRowBytes;

    const int64_t width = int64_t(heads) * kDim, stride = 3 * width;
    const int64_t group_first = int64_t(blockIdx.z) * group_rows, q_first = int64_t(blockIdx.x) * QueryRows;
    const int count = int(min(int64_t(QueryRows), group_rows - q_first));
    const T* q = qkv + (group_first + q_first) * stride + int64_t(blockIdx.y) * kDim;
    const T* k = qkv + group_first * stride + width + int64_t(blockIdx.y) * kDim;

    for (int i = threadIdx.x; i < QueryRows * 8; i += Threads) {
        const int r = i >> 3, c = i & 7;
        copy16_async(q_sh + swizzled(r, c), q + int64_t(r < count ? r : 0) * stride + 8 * c, r < count);
    }
    // Key tiles go through the stages in sequence: the partial one (if any) first, so that the
    // pipelined loop over the full ones has no tail after it.
    const int full = int(group_rows / kKeys), rest = int(group_rows % kKeys), tiles = full + (rest > 0);
    auto stage = [&](int seq) { return kv_sh + uint32_t(seq % Stages) * 2 * kTileBytes; };
    auto load = [&](int seq) {
        const int tile = rest > 0 ? (seq == 0 ? full : seq - 1) : seq;
        const int64_t first = int64_t(tile) * kKeys;
        const int valid = int(min(int64_t(kKeys), group_rows - first)), chunks = tile_width(valid) * 8;
        const uint32_t ks = stage(seq), vs = ks + kTileBytes;
        for (int done = 0; done < chunks; done += Threads) {
            const int i = done + int(threadIdx.x), r = i >> 3, c = i & 7;
            const T* src = k + (first + (r < valid ? r : 0)) * stride + 8 * c;
            copy16_async(ks + swizzled(r, c), src, r < valid, i < chunks);
            copy16_async(vs + swizzled(r, c), src + width, r < valid, i < chunks);
        }
    };
    for (int seq = 0; seq < Stages - 2; ++seq) {
        if (seq < tiles) load(seq);
        commit_copies();
    }
    // Waits for tile `seq` of the sequence and starts loading the one Stages - 2 after it into the
    // stage that held seq - 2, whose products every warpgroup has waited for.
    auto next_tile = [&](int seq) {
        wait_copies<Stages - 3>();
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // cp.async's writes, seen by wgmma
        __syncthreads();
        if (seq + Stages - 2 < tiles) load(seq + Stages - 2);
        commit_copies();
        return stage(seq);
    };

    // Every warpgroup computes, those past the image's last query too: with one block an SM,
    // idling one would save no time, and the products must not sit in divergent code.
    const int group = threadIdx.x >> 7;
    Rows st;
#pragma unroll
    for (int i = 0; i < 32; ++i) st.o[i] = 0.0f;
    st.m[0] = st.m[1] = -INFINITY;
    st.l[0] = st.l[1] = 0.0f;
    const uint32_t q_group = q_sh + uint32_t(group) * 64 * kRowBytes;
    // No product is in flight where paths merge or at a loop's end (ptxas would serialize them).
    int seq = 0;
    float rescale[2];
    if (rest > 0) {
        // The partial tile on its own.
        const uint32_t ks = next_tile(seq++);
        auto partial = [&](auto width) {
            constexpr int NT = decltype(width)::value;
            float s[NT / 2];
            uint32_t p[NT / 16][4];
            issue_scores<T, NT>(s, q_group, ks);
            wgmma_wait<0>();
            softmax<NT>(st, s, rest, scale_log2, rescale);
            pack_weights<T, NT>(s, p);
            issue_values<T, NT>(st, p, ks + kTileBytes, rescale);
            wgmma_wait<0>();
            pin(st.o);
        };
        switch (tile_width(rest)) {
        case 128: partial(std::integral_constant<int, 128>{}); break;
        case 64: partial(std::integral_constant<int, 64>{}); break;
        case 32: partial(std::integral_constant<int, 32>{}); break;
        default: partial(std::integral_constant<int, 16>{});
        }
    }
    if (seq < tiles) {
        // The full tiles, pipelined: each tile's scores are issued before the previous tile's
        // values product, and its softmax runs while that product does.
        float s[kKeys / 2];
        uint32_t p[kKeys / 16][4];
        uint32_t v = next_tile(seq) + kTileBytes;
        issue_scores<T, kKeys>(s, q_group, v - kTileBytes);
        wgmma_wait<0>();
        softmax<kKeys>(st, s, kKeys, scale_log2, rescale);
        pack_weights<T, kKeys>(s, p);
        for (++seq; seq < tiles; ++seq) {
            const uint32_t ks = next_tile(seq);
            issue_scores<T, kKeys>(s, q_group, ks);
            issue_values<T, kKeys>(st, p, v, rescale);
            wgmma_wait<1>();  // the scores
            softmax<kKeys>(st, s, kKeys, scale_log2, rescale);
            wgmma_wait<0>();  // the values product, which reads p
            pin(st.o);
            pack_weights<T, kKeys>(s, p);
            v = ks + kTileBytes;
        }
        issue_values<T, kKeys>(st, p, v, rescale);
    }
    wgmma_wait<0>();
    pin(st.o);

    const int lane = threadIdx.x & 31, row0 = group * 64 + ((threadIdx.x >> 5) & 3) * 16 + (lane >> 2);
    T* dst = out + (group_first + q_first) * width + int64_t(blockIdx.y) * kDim + 2 * (lane & 3);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float sum = st.l[h];
        sum += __shfl_xor_sync(0xffffffff, sum, 1);
        sum += __shfl_xor_sync(0xffffffff, sum, 2);
        const int r = row0 + 8 * h;
        if (r >= count) continue;
        const float inv = 1.0f / sum;
#pragma unroll
        for (int j = 0; j < 8; ++j)
            *reinterpret_cast<uint32_t*>(dst + int64_t(r) * width + 8 * j) =
                pack2<T>(st.o[4 * j + 2 * h] * inv, st.o[4 * j + 2 * h + 1] * inv);
    }
#else
    __trap();
#endif
}

template <class T, int Groups>
void launch(const void* qkv, int32_t heads, int64_t rows, int64_t group_rows, void* out, float scale_log2, cudaStream_t s) {
    static const bool ready = [] {
        check(cudaFuncSetAttribute(wgmma_attention_kernel<T, Groups>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   kSharedBytes<Groups>),
              "attention_full (wgmma)");
        return true;
    }();
    (void)ready;
    const dim3 grid(unsigned((group_rows + Groups * 64 - 1) / (Groups * 64)), unsigned(heads), unsigned(rows / group_rows));
    wgmma_attention_kernel<T, Groups><<<grid, Groups * 128, kSharedBytes<Groups>, s>>>(static_cast<const T*>(qkv), heads, group_rows,
                                                                                      static_cast<T*>(out), scale_log2);
}

}  // namespace

bool wgmma_attention_full(DataType t, const void* qkv, int32_t heads, int32_t head_dim, int64_t rows, int64_t group_rows,
                          void* out, cudaStream_t s) {
    if (t == DataType::F32 || head_dim != kDim || current_device().major != 9 || current_device().minor != 0) return false;
    const float scale_log2 = 1.4426950408889634f / std::sqrt(float(head_dim));
    // Whichever block size finishes first in whole waves: two one-warpgroup blocks fit an SM, and
    // a three-warpgroup block takes about 1.4 times as long as one of them (measured on H100;
    // 1 tile of InternViT goes to the large blocks, 7 to the small, 13 either, CLIP's one image to
    // the small).
    const int64_t images = rows / group_rows, sms = current_device().sms;
    const int64_t small_waves = ((group_rows + 63) / 64 * heads * images + 2 * sms - 1) / (2 * sms);
    const int64_t large_waves = ((group_rows + 191) / 192 * heads * images + sms - 1) / sms;
    const bool large = 7 * large_waves <= 5 * small_waves;
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, float>) {
            if (large) launch<T, 3>(qkv, heads, rows, group_rows, out, scale_log2, s);
            else launch<T, 1>(qkv, heads, rows, group_rows, out, scale_log2, s);
        }
    });
    launched("attention_full (wgmma)");
    return true;
}

}  // namespace lumen::cuda::detail
