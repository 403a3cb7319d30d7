// Attention on tensor cores, in the manner of FlashAttention-2. A block of four warps holds 128
// queries of one head in registers (64 for head_dim 128), streams the keys and values 64 rows at a
// time through shared memory (two stages filled by cp.async while the other is used), computes
// the scores and the weighted sum of values with mma.sync m16n8k16 (fp32 accumulation), and
// keeps an online softmax per query row. The scores never leave registers: the accumulator
// layout of Q·Kᵀ is the operand layout of P·V.
#include <cmath>
#include <type_traits>

#include "kernels/device_common.cuh"
#include "kernels/device_info.h"
#include "kernels/flash_attention.cuh"
#include "kernels/mma.cuh"

namespace lumen::cuda::detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kKeys = 64;  // keys per tile; prompts need KV blocks of this size

// Four 8x8 matrices of 16-bit values; thread t names row t % 8 of matrix t / 8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)));
}

// 16 bytes from global to shared memory, or zeros when `valid` is false.
__device__ __forceinline__ void copy16_async(void* dst, const void* src, bool valid) {
    LUMEN_SM80(asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(shared_address(dst)), "l"(src), "r"(valid ? 16 : 0)));
}
__device__ __forceinline__ void commit_copies() { LUMEN_SM80(asm volatile("cp.async.commit_group;")); }
template <int Pending>
__device__ __forceinline__ void wait_copies() { LUMEN_SM80(asm volatile("cp.async.wait_group %0;" ::"n"(Pending))); }

template <int D>
struct Tile {
    static constexpr int kStride = D + 8;  // padded rows: the 8 rows an ldmatrix reads hit different banks
    static constexpr int kElements = kKeys * kStride;
    static constexpr int kSharedBytes = 2 * 2 * kElements * 2;  // two stages of K and V, 16-bit
};

// Query rows per warp, in 16-row m-tiles: two for head_dim 64, so that each key and value
// fragment loaded from shared memory feeds four products; one for 128, where two would not fit in
// registers.
template <int D> constexpr int kMTiles = D <= 64 ? 2 : 1;
template <int D> constexpr int kBlockRows = 16 * kMTiles<D> * kWarps;

// The work of one block: queries in registers, key/value tiles from `source`, out rows stored.
// Source provides tiles(), valid_rows(tile), k_row(tile, r) and v_row(tile, r). For `Causal`,
// query_pos holds the position of each of this thread's rows and first_pos the block's first.
template <class T, int D, bool Causal, class Source>
__device__ __forceinline__ void attend(const T* q, int64_t q_stride, int count, const int32_t (&query_pos)[kMTiles<D>][2],
                                       int32_t first_pos, const Source& source, T* out, int64_t out_stride, float scale_log2) {
    using M = Mma<T>;
    using Layout = Tile<D>;
    constexpr int S = Layout::kStride, MT = kMTiles<D>;
    extern __shared__ __align__(16) unsigned char shared[];
    T* k_sh = reinterpret_cast<T*>(shared);
    T* v_sh = k_sh + 2 * Layout::kElements;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // This thread's rows: row0 + 16·mt and row0 + 16·mt + 8.
    const int row0 = warp * 16 * MT + (lane >> 2);

    uint32_t qf[MT][D / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int r = row0 + 16 * mt + 8 * (i & 1), c = 16 * kk + 2 * (lane & 3) + 8 * (i >> 1);
                qf[mt][kk][i] = r < count ? *reinterpret_cast<const uint32_t*>(q + r * q_stride + c) : 0u;
            }
    float o[MT][D / 8][4];
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }

    auto load = [&](int tile, int stage) {
        const int valid = source.valid_rows(tile);
        constexpr int kChunks = D / 8;
        for (int i = threadIdx.x; i < kKeys * kChunks; i += kThreads) {
            const int r = i / kChunks, c = (i % kChunks) * 8;
            const bool ok = r < valid;
            const int from = ok ? r : 0;
            copy16_async(k_sh + stage * Layout::kElements + r * S + c, source.k_row(tile, from) + c, ok);
            copy16_async(v_sh + stage * Layout::kElements + r * S + c, source.v_row(tile, from) + c, ok);
        }
    };

    const int tiles = source.tiles();
    load(0, 0);
    commit_copies();
    for (int tile = 0; tile < tiles; ++tile) {
        if (tile + 1 < tiles) load(tile + 1, (tile + 1) & 1);
        commit_copies();
        wait_copies<1>();
        __syncthreads();
        const T* k_tile = k_sh + (tile & 1) * Layout::kElements;
        const T* v_tile = v_sh + (tile & 1) * Layout::kElements;

        // Scores: 16 rows x 64 keys per m-tile, as eight 16x8 accumulators.
        float s[MT][8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int j = 0; j < 8; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk += 2)
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                uint32_t b[4];
                ldmatrix_x4(b, k_tile + (8 * j + (lane & 7)) * S + 16 * kk + (lane >> 3) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    M::run(s[mt][j], qf[mt][kk], b[0], b[1]);
                    M::run(s[mt][j], qf[mt][kk + 1], b[2], b[3]);
                }
            }

        // Keys past the end (or, for prompts, after the query) get no weight.
        const int base = tile * kKeys;
        const int valid = source.valid_rows(tile);
        if (Causal ? base + kKeys - 1 > first_pos : valid < kKeys) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int j = 0; j < 8; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int key = 8 * j + 2 * (lane & 3) + (e & 1);
                        if (Causal ? base + key > query_pos[mt][e >> 1] : key >= valid) s[mt][j][e] = -INFINITY;
                    }
        }

#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            // Online softmax: the four threads of a quad share each row.
            float mx[2] = {m[mt][0], m[mt][1]};
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                mx[0] = fmaxf(mx[0], fmaxf(s[mt][j][0], s[mt][j][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[mt][j][2], s[mt][j][3]));
            }
            float shift[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 2));
                shift[i] = mx[i] == -INFINITY ? 0.0f : mx[i] * scale_log2;  // a row with nothing visible yet
                const float correction = fast_exp2(m[mt][i] * scale_log2 - shift[i]);
                m[mt][i] = mx[i];
                l[mt][i] *= correction;
#pragma unroll
                for (int n = 0; n < D / 8; ++n) o[mt][n][2 * i] *= correction, o[mt][n][2 * i + 1] *= correction;
            }
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    s[mt][j][e] = fast_exp2(fmaf(s[mt][j][e], scale_log2, -shift[e >> 1]));
                    l[mt][e >> 1] += s[mt][j][e];
                }
        }

        // o += P·V, P taken straight from the score accumulators.
#pragma unroll
        for (int kk = 0; kk < kKeys / 16; ++kk) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                a[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                a[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                a[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                a[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, v_tile + (16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8) * S + 16 * dp + (lane >> 4) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    M::run(o[mt][2 * dp], a[mt], b[0], b[1]);
                    M::run(o[mt][2 * dp + 1], a[mt], b[2], b[3]);
                }
            }
        }
        __syncthreads();  // the next iteration refills this stage
    }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float sum = l[mt][i];
            sum += __shfl_xor_sync(0xffffffff, sum, 1);
            sum += __shfl_xor_sync(0xffffffff, sum, 2);
            const int r = row0 + 16 * mt + 8 * i;
            if (r >= count) continue;
            const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
            T* dst = out + r * out_stride + 2 * (lane & 3);
#pragma unroll
            for (int n = 0; n < D / 8; ++n)
                *reinterpret_cast<uint32_t*>(dst + 8 * n) = pack2<T>(o[mt][n][2 * i] * inv, o[mt][n][2 * i + 1] * inv);
        }
}

// Keys and values of one image and head, rows of a packed q | k | v matrix.
template <class T>
struct ImageSource {
    const T* first;  // the k of the group's first row, this head
    int64_t stride;  // elements between rows
    int64_t v_offset;
    int64_t rows;
    __device__ int tiles() const { return int((rows + kKeys - 1) / kKeys); }
    __device__ int valid_rows(int tile) const { return int(min(int64_t(kKeys), rows - int64_t(tile) * kKeys)); }
    __device__ const T* k_row(int tile, int r) const { return first + (int64_t(tile) * kKeys + r) * stride; }
    __device__ const T* v_row(int tile, int r) const { return k_row(tile, r) + v_offset; }
};

template <class T, int D>
__global__ void __launch_bounds__(kThreads) flash_full_kernel(const T* qkv, int32_t heads, int64_t group_rows, T* out, float scale_log2) {
    const int64_t width = int64_t(heads) * D;
    const int64_t group_first = int64_t(blockIdx.z) * group_rows, q_first = int64_t(blockIdx.x) * kBlockRows<D>;
    const int h = blockIdx.y;
    const int count = int(min(int64_t(kBlockRows<D>), group_rows - q_first));
    const ImageSource<T> source{qkv + group_first * 3 * width + width + int64_t(h) * D, 3 * width, width, group_rows};
    const int32_t no_positions[kMTiles<D>][2] = {};
    attend<T, D, false>(qkv + (group_first + q_first) * 3 * width + int64_t(h) * D, 3 * width, count, no_positions, 0, source,
                        out + (group_first + q_first) * width + int64_t(h) * D, width, scale_log2);
}

// Keys and values of one sequence and KV head in the paged pool: tile t is the sequence's block t.
template <class T>
struct PagedSource {
    const T* pool;
    const int32_t* table;
    KvLayout kv;
    int32_t layer, kv_head, last_pos;
    __device__ int tiles() const { return last_pos / kKeys + 1; }
    __device__ int valid_rows(int tile) const { return min(kKeys, last_pos - tile * kKeys + 1); }  // later rows were never written
    __device__ const T* k_row(int tile, int r) const { return pool + kv_offset(kv, table[tile], layer, 0, kv_head, r); }
    __device__ const T* v_row(int tile, int r) const { return pool + kv_offset(kv, table[tile], layer, 1, kv_head, r); }
};

template <class T, int D>
__global__ void __launch_bounds__(kThreads)
flash_prompt_kernel(const T* qkv, int32_t heads, int32_t kv_heads, Batch b, const T* pool, int32_t layer, KvLayout kv, T* out,
                    float scale_log2) {
    // Later tiles of a prompt see more keys: they start first, so that the short ones fill the tail.
    const int tile = int(gridDim.x - 1 - blockIdx.x);
    const int32_t first = b.query_tiles[2 * tile], count = b.query_tiles[2 * tile + 1];
    const int32_t h = blockIdx.y;
    const int64_t width = int64_t(heads + 2 * kv_heads) * D;
    const int32_t last_pos = b.positions[first + count - 1];
    const int row0 = (threadIdx.x >> 5) * 16 * kMTiles<D> + ((threadIdx.x & 31) >> 2);
    int32_t query_pos[kMTiles<D>][2];
    for (int mt = 0; mt < kMTiles<D>; ++mt)
        for (int i = 0; i < 2; ++i) {
            const int r = row0 + 16 * mt + 8 * i;
            query_pos[mt][i] = r < count ? b.positions[first + r] : last_pos;
        }
    const PagedSource<T> source{pool, b.block_tables + int64_t(b.token_seq[first]) * b.max_blocks, kv, layer,
                                h / (heads / kv_heads), last_pos};
    attend<T, D, true>(qkv + int64_t(first) * width + int64_t(h) * D, width, count, query_pos, b.positions[first], source,
                       out + int64_t(first) * heads * D + int64_t(h) * D, int64_t(heads) * D, scale_log2);
}

// Calls launch(T{}, integral_constant<int, D>{}) for the 16-bit types and head sizes covered.
template <class F>
void with_types(DataType t, int32_t head_dim, F&& launch) {
    dispatch(t, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, float>) {
            if (head_dim == 64) launch(T{}, std::integral_constant<int, 64>{});
            else if (head_dim == 128) launch(T{}, std::integral_constant<int, 128>{});
        }
    });
}

// Shared memory beyond the default 48 KiB must be asked for, once per kernel.
template <class Kernel>
bool allow_shared(Kernel kernel, int bytes) {
    if (bytes > 48 * 1024) check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), "flash attention");
    return true;
}

constexpr float kLog2e = 1.4426950408889634f;

}  // namespace

bool flash_attention_covers(DataType t, int32_t head_dim) {
    if (t == DataType::F32 || (head_dim != 64 && head_dim != 128)) return false;
    return current_device().major >= 8;
}

bool flash_prompt_attention_covers(DataType t, int32_t head_dim, int32_t block_size) {
    return flash_attention_covers(t, head_dim) && block_size == kKeys;
}

int32_t flash_query_rows(int32_t head_dim) { return head_dim <= 64 ? kBlockRows<64> : kBlockRows<128>; }

bool flash_attention_full(DataType t, const void* qkv, int32_t heads, int32_t head_dim, int64_t rows, int64_t group_rows,
                          void* out, cudaStream_t s) {
    if (wgmma_attention_full(t, qkv, heads, head_dim, rows, group_rows, out, s)) return true;
    if (!flash_attention_covers(t, head_dim)) return false;
    const int64_t block_rows = flash_query_rows(head_dim);
    const dim3 grid(unsigned((group_rows + block_rows - 1) / block_rows), unsigned(heads), unsigned(rows / group_rows));
    const float scale_log2 = kLog2e / std::sqrt(float(head_dim));
    with_types(t, head_dim, [&](auto tag, auto d) {
        using T = decltype(tag);
        constexpr int D = decltype(d)::value;
        static const bool ready = allow_shared(flash_full_kernel<T, D>, Tile<D>::kSharedBytes);
        (void)ready;
        flash_full_kernel<T, D><<<grid, kThreads, Tile<D>::kSharedBytes, s>>>(static_cast<const T*>(qkv), heads, group_rows,
                                                                             static_cast<T*>(out), scale_log2);
    });
    launched("attention_full (tensor cores)");
    return true;
}

bool flash_attention_prompt(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& b,
                            const void* pool, int32_t layer, const KvLayout& kv, void* out, cudaStream_t s) {
    if (b.num_query_tiles == 0 || !flash_prompt_attention_covers(t, head_dim, kv.block_size)) return false;
    const dim3 grid(unsigned(b.num_query_tiles), unsigned(heads));
    const float scale_log2 = kLog2e / std::sqrt(float(head_dim));
    with_types(t, head_dim, [&](auto tag, auto d) {
        using T = decltype(tag);
        constexpr int D = decltype(d)::value;
        static const bool ready = allow_shared(flash_prompt_kernel<T, D>, Tile<D>::kSharedBytes);
        (void)ready;
        flash_prompt_kernel<T, D><<<grid, kThreads, Tile<D>::kSharedBytes, s>>>(static_cast<const T*>(qkv), heads, kv_heads, b,
                                                                               static_cast<const T*>(pool), layer, kv,
                                                                               static_cast<T*>(out), scale_log2);
    });
    launched("attention (prompt, tensor cores)");
    return true;
}

}  // namespace lumen::cuda::detail
