// Attention over whole images on Hopper's warpgroup tensor cores (wgmma), head_dim 64. Built for
// sm_90a alone (wgmma exists nowhere else); flash_attention_full calls it on compute capability
// 9.0 and takes the mma.sync kernel elsewhere.
//
// FlashAttention-3's arrangement. A block holds 128 or 192 queries of one head and image: a
// producer warp loads them and the keys and values by TMA (128-row boxes of the qkv matrix in the
// 128-byte swizzle that wgmma reads; completion counted in bytes on each stage's `full` barrier),
// and two or three consumer warpgroups of 64 queries take turns in a ring: one issues its products
// while the others take their exponentials. Each computes S = Q·Kᵀ (64 x 128, both operands from shared memory), keeps the
// online softmax in registers and computes O += P·V with P straight from the score registers; a
// tile's scores are issued before the previous tile's values product, and the softmax runs while
// that product does. Consumers hand a stage back on its `empty` barrier. The partial key tile of
// an image (1025 = 8 · 128 + 1 keys) goes first and alone, read only as wide as its valid keys
// need (16 to 128); the rows past it belong to the next image or, past the matrix, read as zeros,
// and get no weight.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cmath>
#include <string>
#include <type_traits>

#include "engine/util/error.h"
#include "kernels/device_common.cuh"
#include "kernels/device_info.h"
#include "kernels/flash_attention.cuh"

namespace lumen::cuda::detail {
namespace {

constexpr int kDim = 64;
constexpr int kRowBytes = kDim * 2;
constexpr int kKeys = 128;
constexpr int kTileBytes = kKeys * kRowBytes;

constexpr int kStages = 4;
// Consumer warpgroups a block, each 64 queries; Q is loaded as whole 128-row boxes.
template <int Groups>
constexpr int kQueryBoxes = (Groups * 64 + kKeys - 1) / kKeys;
template <int Groups>
constexpr int kSharedBytes = kQueryBoxes<Groups> * kTileBytes + kStages * 2 * kTileBytes + 1024 + (2 * kStages + 1) * 8;
// Two consumer warpgroups and a producer warp fit the register file as they are; with three, the
// producer is a whole warpgroup that hands its registers to the consumers (setmaxnreg).
template <int Groups>
constexpr bool kProducerWarpgroup = Groups > 2;
template <int Groups>
constexpr int kThreads = Groups * 128 + (kProducerWarpgroup<Groups> ? 128 : 32);
constexpr int kProducerRegisters = 24, kConsumerRegisters = 160;

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

// A shared-memory matrix descriptor for 128-byte-swizzled rows of 128 bytes: 8-row groups 1024
// bytes apart. K-major operands step along k by moving the start 32 bytes; the MN-major one (the
// values) steps by 16 rows.
__device__ __forceinline__ uint64_t descriptor(uint32_t address) {
    return uint64_t((address & 0x3FFFF) >> 4) | uint64_t(1) << 16 | uint64_t(1024 >> 4) << 32 | uint64_t(1) << 62;
}

// The keys a tile is read as: all 128, or the valid ones of the partial tile rounded up to a
// product's width.
__device__ __forceinline__ int tile_width(int valid) { return valid > 64 ? 128 : valid > 32 ? 64 : valid > 16 ? 32 : 16; }

// Shared-memory barriers (mbarrier): TMA completes its bytes on `full`, consumers arrive on
// `empty`; named barriers 1 and 2 pass the turn between the two consumer warpgroups.
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("{.reg .b64 state; mbarrier.arrive.shared::cta.b64 state, [%0];}" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes) {
    asm volatile("{.reg .b64 state; mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;}" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile("{.reg .pred done;\n"
                 "WAIT_%=: mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT_%=;}" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}
// The 64-column, 128-row box of the qkv matrix at (column, row) into shared memory, swizzled.
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, int column, int row, uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(column), "r"(row), "r"(bar)
                 : "memory");
}
template <int N>
__device__ __forceinline__ void registers_down() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void registers_up() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N)); }
__device__ __forceinline__ void turn_wait(int id) { asm volatile("bar.sync %0, 256;" ::"r"(id) : "memory"); }
__device__ __forceinline__ void turn_pass(int id) { asm volatile("bar.arrive %0, 256;" ::"r"(id) : "memory"); }

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
__global__ void __launch_bounds__(kThreads<Groups>, 1)
wgmma_attention_kernel(const __grid_constant__ CUtensorMap map, int32_t heads, int64_t group_rows, T* out, float scale_log2) {
#ifdef LUMEN_WGMMA
    constexpr int Stages = kStages, QueryRows = 64 * Groups, Consumers = 128 * Groups;
    extern __shared__ unsigned char raw[];
    const uint32_t base = (shared_address(raw) + 1023) & ~1023u;
    const uint32_t q_sh = base, kv_sh = base + kQueryBoxes<Groups> * kTileBytes, bars = kv_sh + Stages * 2 * kTileBytes;
    auto full_bar = [&](int seq) { return bars + uint32_t(seq % Stages) * 8; };
    auto empty_bar = [&](int seq) { return bars + uint32_t(Stages + seq % Stages) * 8; };
    const uint32_t q_bar = bars + 2 * Stages * 8;
    auto stage = [&](int seq) { return kv_sh + uint32_t(seq % Stages) * 2 * kTileBytes; };
    if (threadIdx.x == 0) {
        for (int i = 0; i < Stages; ++i) {
            mbar_init(full_bar(i), 1);
            mbar_init(empty_bar(i), Consumers);
        }
        mbar_init(q_bar, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    const int width = heads * kDim;
    const int group_first = int(int64_t(blockIdx.z) * group_rows), q_first = int(blockIdx.x) * QueryRows;
    const int count = int(min(int64_t(QueryRows), group_rows - q_first));
    const int full = int(group_rows / kKeys), rest = int(group_rows % kKeys), tiles = full + (rest > 0);
    // The partial key tile (if any) goes first.
    auto key_row = [&](int seq) { return group_first + (rest > 0 ? (seq == 0 ? full : seq - 1) : seq) * kKeys; };

    if (threadIdx.x >= Consumers) {
        if constexpr (kProducerWarpgroup<Groups>) registers_down<kProducerRegisters>();
        // The producer: one thread of the last warp.
        if (threadIdx.x == Consumers) {
            const int column = int(blockIdx.y) * kDim;
            mbar_expect(q_bar, kQueryBoxes<Groups> * kTileBytes);
            for (int b = 0; b < kQueryBoxes<Groups>; ++b)
                tma_load(q_sh + uint32_t(b) * kTileBytes, &map, column, group_first + q_first + b * kKeys, q_bar);
            for (int seq = 0; seq < tiles; ++seq) {
                if (seq >= Stages) mbar_wait(empty_bar(seq), uint32_t(seq / Stages - 1) & 1);
                mbar_expect(full_bar(seq), 2 * kTileBytes);
                tma_load(stage(seq), &map, width + column, key_row(seq), full_bar(seq));
                tma_load(stage(seq) + kTileBytes, &map, 2 * width + column, key_row(seq), full_bar(seq));
            }
        }
        return;
    }

    if constexpr (kProducerWarpgroup<Groups>) registers_up<kConsumerRegisters>();
    const int group = threadIdx.x >> 7;
    Rows st;
#pragma unroll
    for (int i = 0; i < 32; ++i) st.o[i] = 0.0f;
    st.m[0] = st.m[1] = -INFINITY;
    st.l[0] = st.l[1] = 0.0f;
    const uint32_t q_group = q_sh + uint32_t(group) * 64 * kRowBytes;
    mbar_wait(q_bar, 0);
    auto ready = [&](int seq) {
        mbar_wait(full_bar(seq), uint32_t(seq / Stages) & 1);
        return stage(seq);
    };
    int seq = 0;
    float rescale[2];
    if (rest > 0) {
        const uint32_t ks = ready(seq);
        auto partial = [&](auto w) {
            constexpr int NT = decltype(w)::value;
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
        mbar_arrive(empty_bar(seq));
        ++seq;
    }
    if (seq < tiles) {
        // The warpgroups take turns in a ring, warpgroup 0 first; each passes the turn after
        // issuing its products (the last one's last pass would go unanswered).
        const int mine = 1 + group, other = 1 + (group + 1) % Groups;
        if (group == Groups - 1) turn_pass(other);
        float s[kKeys / 2];
        uint32_t p[kKeys / 16][4];
        uint32_t v = ready(seq) + kTileBytes;
        turn_wait(mine);
        issue_scores<T, kKeys>(s, q_group, v - kTileBytes);
        if (seq + 1 < tiles || group != Groups - 1) turn_pass(other);
        wgmma_wait<0>();
        softmax<kKeys>(st, s, kKeys, scale_log2, rescale);
        pack_weights<T, kKeys>(s, p);
        for (++seq; seq < tiles; ++seq) {
            const uint32_t ks = ready(seq);
            turn_wait(mine);
            issue_scores<T, kKeys>(s, q_group, ks);
            issue_values<T, kKeys>(st, p, v, rescale);
            if (seq + 1 < tiles || group != Groups - 1) turn_pass(other);
            wgmma_wait<1>();  // the scores
            softmax<kKeys>(st, s, kKeys, scale_log2, rescale);
            wgmma_wait<0>();  // the values product, which reads p
            pin(st.o);
            mbar_arrive(empty_bar(seq - 1));
            pack_weights<T, kKeys>(s, p);
            v = ks + kTileBytes;
        }
        issue_values<T, kKeys>(st, p, v, rescale);
    }
    wgmma_wait<0>();
    pin(st.o);

    const int lane = threadIdx.x & 31, row0 = group * 64 + ((threadIdx.x >> 5) & 3) * 16 + (lane >> 2);
    T* dst = out + (int64_t(group_first) + q_first) * width + int64_t(blockIdx.y) * kDim + 2 * (lane & 3);
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

// A tensor map over the qkv matrix: 64-column boxes of 128 rows, 128-byte swizzled, rows past the
// end read as zeros. Encoded by the driver, found through the runtime (no link to libcuda).
CUtensorMap qkv_map(DataType t, const void* qkv, int64_t rows, int64_t cols) {
    static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
        void* fn = nullptr;
        cudaDriverEntryPointQueryResult found{};
        check(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found),
              "cudaGetDriverEntryPointByVersion");
        if (found != cudaDriverEntryPointSuccess || !fn) throw lumen::Error("the driver has no cuTensorMapEncodeTiled");
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    }();
    CUtensorMap map{};
    const cuuint64_t dims[2] = {cuuint64_t(cols), cuuint64_t(rows)};
    const cuuint64_t strides[1] = {cuuint64_t(cols) * 2};
    const cuuint32_t box[2] = {uint32_t(kDim), uint32_t(kKeys)}, steps[2] = {1, 1};
    const CUresult r = encode(&map, t == DataType::F16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
                              const_cast<void*>(qkv), dims, strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) throw lumen::Error("cuTensorMapEncodeTiled failed (" + std::to_string(int(r)) + ")");
    return map;
}

}  // namespace

bool wgmma_attention_full(DataType t, const void* qkv, int32_t heads, int32_t head_dim, int64_t rows, int64_t group_rows,
                          void* out, cudaStream_t s) {
    const DeviceTraits& device = current_device();
    if (t == DataType::F32 || head_dim != kDim || device.major != 9 || device.minor != 0) return false;
    // What a tensor map takes: 16-byte aligned rows, row numbers in 32 bits.
    if (reinterpret_cast<uintptr_t>(qkv) % 16 != 0 || rows >= (int64_t(1) << 31)) return false;
    const float scale_log2 = 1.4426950408889634f / std::sqrt(float(head_dim));
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, float>) {
            auto launch = [&](auto groups) {
                constexpr int G = decltype(groups)::value;
                static const bool ready = [] {
                    check(cudaFuncSetAttribute(wgmma_attention_kernel<T, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes<G>),
                          "attention_full (wgmma)");
                    return true;
                }();
                (void)ready;
                const CUtensorMap map = qkv_map(t, qkv, rows, 3 * int64_t(heads) * kDim);
                const dim3 grid(unsigned((group_rows + 64 * G - 1) / (64 * G)), unsigned(heads), unsigned(rows / group_rows));
                wgmma_attention_kernel<T, G>
                    <<<grid, kThreads<G>, kSharedBytes<G>, s>>>(map, heads, group_rows, static_cast<T*>(out), scale_log2);
            };
            // Three warpgroups a block share each key tile among more queries (InternViT's 1025
            // rows: 158 against 183 us a layer), unless their 192-query blocks pad an image more
            // than 128-query ones would (CLIP's 577 rows: 768 against 640).
            auto padded = [&](int64_t block) { return (group_rows + block - 1) / block * block; };
            if (padded(192) <= padded(128)) launch(std::integral_constant<int, 3>{});
            else launch(std::integral_constant<int, 2>{});
        }
    });
    launched("attention_full (wgmma)");
    return true;
}

}  // namespace lumen::cuda::detail
