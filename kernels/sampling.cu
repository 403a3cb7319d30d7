// Sampling on the GPU: one block per row of logits applies the repetition, presence and frequency
// penalties, temperature,
// top-k, top-p and min-p as sample_logits does on the host, and draws a token with the row's
// uniform value, walking the kept tokens in id order. Thresholds are found by radix selection
// over the logits' bits (eight bits a pass), so the vocabulary is never sorted; when top-k leaves
// few tokens, they are gathered into shared memory (sorted by id) for the rest.
#include <climits>
#include <cmath>

#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 1024;

// Float bits as an unsigned integer of the same order.
__device__ __forceinline__ uint32_t order_key(float v) {
    const uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// bins[bin] += value for every lane of the warp (bin < 0: nothing), one atomic per distinct bin:
// the logits of a row crowd into a few bins, where lane-by-lane atomics would queue. Every lane
// of the warp must call it.
template <class T>
__device__ __forceinline__ void warp_add(T* bins, int bin, T value) {
    const unsigned peers = __match_any_sync(0xffffffffu, bin);
    if (bin < 0) return;
    T sum = 0;
    for (unsigned m = peers; m; m &= m - 1) sum += __shfl_sync(peers, value, __ffs(int(m)) - 1);
    if (int(threadIdx.x & 31) == __ffs(int(peers)) - 1) atomicAdd(&bins[bin], sum);
}

template <class T, class Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffff, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = scratch[lane < int(blockDim.x >> 5) ? lane : 0];
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// Rows that top-k cuts to at most this many tokens continue in shared memory, sorted by id.
constexpr int kCompact = 2048;

struct Shared {
    float value[kCompact];
    int32_t id[kCompact];
    int compact_count;
    double mass[256];
    uint32_t count[256];
    double scratch_d[32];
    float scratch_f[32];
    int scratch_i[32];
    uint32_t prefix;
    int found;
    double below;
};

// A row's candidates in id order: the whole row, or the survivors of top-k gathered in shared memory.
struct FullRow {
    const float* values;
    int64_t n;
    __device__ float value(int64_t i) const { return values[i]; }
    __device__ int32_t id(int64_t i) const { return int32_t(i); }
};
struct Compact {
    const float* values;
    const int32_t* ids;
    int64_t n;
    __device__ float value(int64_t i) const { return values[i]; }
    __device__ int32_t id(int64_t i) const { return ids[i]; }
};

// top-p, min-p and the draw over `row` (values already divided by the temperature; `cut` from
// top-k, `max` the largest value).
template <class Row>
__device__ void finish(const Row& row, const SampleParams& P, float cut, float max, Shared& sh, int32_t* out) {
    const int tid = threadIdx.x;
    const int64_t vocab = row.n;
    auto weight = [&](float s) { return exp(double(s) - double(max)); };
    auto sum_op = [](double a, double b) { return a + b; };

    // top-p: the smallest value whose tail mass, itself included, exceeds 1 - top_p of the kept
    // mass (tokens below it go, least likely first; the most likely always stays).
    if (P.top_p < 1.0f) {
        double total = 0;
        for (int64_t i = tid; i < vocab; i += kThreads)
            if (row.value(i) >= cut) total += weight(row.value(i));
        total = block_reduce(total, sum_op, sh.scratch_d);
        const double drop = (1.0 - double(P.top_p)) * total;
        uint32_t prefix = 0;
        double below = 0;
        bool found = true;
        for (int shift = 24; shift >= 0 && found; shift -= 8) {
            const uint32_t high = shift == 24 ? 0u : ~0u << (shift + 8);
            for (int b = tid; b < 256; b += kThreads) sh.mass[b] = 0;
            __syncthreads();
            for (int64_t base = 0; base < vocab; base += kThreads) {
                const int64_t i = base + tid;
                const float s = i < vocab ? row.value(i) : -INFINITY;
                const uint32_t k = order_key(s);
                const bool in = i < vocab && s >= cut && (k & high) == prefix;
                warp_add(sh.mass, in ? int((k >> shift) & 255u) : -1, in ? weight(s) : 0.0);
            }
            __syncthreads();
            if (tid == 0) {
                sh.found = 0;
                double acc = below;
                for (int b = 0; b < 256; ++b) {
                    if (acc + sh.mass[b] > drop) {
                        sh.prefix = prefix | (uint32_t(b) << shift);
                        sh.below = acc;
                        sh.found = 1;
                        break;
                    }
                    acc += sh.mass[b];
                }
            }
            __syncthreads();
            found = sh.found;
            prefix = sh.prefix;
            below = sh.below;
            __syncthreads();
        }
        cut = found ? fmaxf(cut, key_value(prefix)) : max;
    }

    // min-p, then the draw: kept tokens in id order, each thread a contiguous run of ids.
    auto kept = [&](float s) { return s >= cut && (P.min_p <= 0.0f || weight(s) >= double(P.min_p)); };
    const int64_t run = (vocab + kThreads - 1) / kThreads, begin = int64_t(tid) * run, end = begin + run < vocab ? begin + run : vocab;
    double mine = 0;
    int last = -1;
    for (int64_t i = begin; i < end; ++i)
        if (kept(row.value(i))) {
            mine += weight(row.value(i));
            last = int(i);
        }
    // Exclusive prefix of the runs' masses across the block.
    double prefix = mine;
    for (int o = 1; o < 32; o <<= 1) {
        const double n = __shfl_up_sync(0xffffffff, prefix, o);
        if ((tid & 31) >= o) prefix += n;
    }
    if ((tid & 31) == 31) sh.scratch_d[tid >> 5] = prefix;
    __syncthreads();
    if (tid < 32) {
        double w = tid < kThreads / 32 ? sh.scratch_d[tid] : 0.0;
        for (int o = 1; o < 32; o <<= 1) {
            const double n = __shfl_up_sync(0xffffffff, w, o);
            if (tid >= o) w += n;
        }
        sh.scratch_d[tid] = w;  // inclusive over warps
    }
    __syncthreads();
    const double total = sh.scratch_d[kThreads / 32 - 1];
    prefix += (tid >> 5) > 0 ? sh.scratch_d[(tid >> 5) - 1] : 0.0;
    prefix -= mine;  // exclusive
    const int last_kept = block_reduce(last, [](int a, int b) { return a > b ? a : b; }, sh.scratch_i);
    if (tid == 0) out[blockIdx.x] = row.id(last_kept);  // where rounding leaves the draw past the end
    __syncthreads();
    const double target = P.u * total;
    if (mine > 0 && target >= prefix && target < prefix + mine) {
        double cumulative = prefix;
        for (int64_t i = begin; i < end; ++i)
            if (kept(row.value(i))) {
                cumulative += weight(row.value(i));
                if (target < cumulative) {
                    out[blockIdx.x] = row.id(i);
                    break;
                }
            }
    }
}

__global__ void __launch_bounds__(kThreads)
sample_kernel(float* logits, int64_t vocab, const SampleParams* params, const int32_t* penalized, const LoweredLogit* lowered,
              int32_t* out) {
    __shared__ Shared sh;
    const SampleParams P = params[blockIdx.x];
    float* l = logits + int64_t(blockIdx.x) * vocab;
    const int tid = threadIdx.x;

    if (P.repetition_penalty != 1.0f)
        for (int i = tid; i < P.penalized_count; i += kThreads) {
            const int32_t id = penalized[P.penalized_begin + i];
            if (id < 0 || id >= vocab) continue;
            const float v = l[id];
            l[id] = v > 0 ? v / P.repetition_penalty : v * P.repetition_penalty;
        }
    __syncthreads();
    // After the repetition penalty, as on the host: an id may be in both lists.
    for (int i = tid; i < P.lowered_count; i += kThreads) {
        const LoweredLogit t = lowered[P.lowered_begin + i];
        if (t.id >= 0 && t.id < vocab) l[t.id] -= t.by;
    }
    __syncthreads();

    auto fmax_op = [](float a, float b) { return fmaxf(a, b); };
    auto min_op = [](int a, int b) { return a < b ? a : b; };

    if (P.temperature <= 0.0f || P.top_k == 1) {
        // Greedy: the first index of the largest value.
        float best = -INFINITY;
        for (int64_t i = tid; i < vocab; i += kThreads) best = fmaxf(best, l[i]);
        best = block_reduce(best, fmax_op, sh.scratch_f);
        int first = INT_MAX;
        for (int64_t i = tid; i < vocab; i += kThreads)
            if (l[i] == best) {
                first = int(i);
                break;
            }
        first = block_reduce(first, min_op, sh.scratch_i);
        if (tid == 0) out[blockIdx.x] = first;
        return;
    }

    float max = -INFINITY;
    for (int64_t i = tid; i < vocab; i += kThreads) {
        const float s = l[i] / P.temperature;
        l[i] = s;
        max = fmaxf(max, s);
    }
    max = block_reduce(max, fmax_op, sh.scratch_f);

    // top-k: the k-th largest value, ties with it kept.
    float cut = -INFINITY;
    if (P.top_k > 0 && P.top_k < vocab) {
        uint32_t prefix = 0;
        int need = P.top_k;
        for (int shift = 24; shift >= 0; shift -= 8) {
            const uint32_t high = shift == 24 ? 0u : ~0u << (shift + 8);
            for (int b = tid; b < 256; b += kThreads) sh.count[b] = 0;
            __syncthreads();
            for (int64_t base = 0; base < vocab; base += kThreads) {
                const int64_t i = base + tid;
                const uint32_t k = i < vocab ? order_key(l[i]) : 0u;
                warp_add(sh.count, i < vocab && (k & high) == prefix ? int((k >> shift) & 255u) : -1, 1u);
            }
            __syncthreads();
            if (tid == 0) {
                int above = 0;
                for (int b = 255; b >= 0; --b) {
                    if (above + int(sh.count[b]) >= need) {
                        sh.prefix = prefix | (uint32_t(b) << shift);
                        sh.found = need - above;
                        break;
                    }
                    above += int(sh.count[b]);
                }
            }
            __syncthreads();
            prefix = sh.prefix;
            need = sh.found;
            __syncthreads();
        }
        cut = key_value(prefix);
    }

    if (cut > -INFINITY) {
        // Few survivors (the usual top-k of tens): gather them, sort them by id, go on there.
        int mine = 0;
        for (int64_t i = tid; i < vocab; i += kThreads) mine += l[i] >= cut;
        const int count = block_reduce(mine, [](int x, int y) { return x + y; }, sh.scratch_i);
        if (count <= kCompact) {
            if (tid == 0) sh.compact_count = 0;
            __syncthreads();
            for (int64_t i = tid; i < vocab; i += kThreads)
                if (l[i] >= cut) {
                    const int slot = atomicAdd(&sh.compact_count, 1);
                    sh.value[slot] = l[i];
                    sh.id[slot] = int32_t(i);
                }
            int span = 2;
            while (span < count) span <<= 1;
            for (int i = count + tid; i < span; i += kThreads) sh.id[i] = INT_MAX;
            __syncthreads();
            // Bitonic sort of the (id, value) pairs by id, padding last.
            for (int size = 2; size <= span; size <<= 1)
                for (int stride = size >> 1; stride > 0; stride >>= 1) {
                    for (int i = tid; i < span; i += kThreads) {
                        const int j = i ^ stride;
                        if (j > i && ((i & size) == 0) == (sh.id[i] > sh.id[j])) {
                            const int32_t t = sh.id[i];
                            sh.id[i] = sh.id[j];
                            sh.id[j] = t;
                            const float v = sh.value[i];
                            sh.value[i] = sh.value[j];
                            sh.value[j] = v;
                        }
                    }
                    __syncthreads();
                }
            const Compact row{sh.value, sh.id, count};
            finish(row, P, cut, max, sh, out);
            return;
        }
    }
    const FullRow row{l, vocab};
    finish(row, P, cut, max, sh, out);
}

}  // namespace

void sample_rows(float* logits, int32_t rows, int64_t vocab, const SampleParams* params, const int32_t* penalized,
                 const LoweredLogit* lowered, int32_t* out, cudaStream_t s) {
    if (rows == 0) return;
    sample_kernel<<<unsigned(rows), kThreads, 0, s>>>(logits, vocab, params, penalized, lowered, out);
    launched("sample_rows");
}

// Greedy choice. CPU reference: CpuBackend::argmax_rows (engine/backend/cpu_backend.cpp).
namespace {

using namespace detail;

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


}  // namespace

void argmax_rows(const float* logits, int32_t rows, int64_t cols, int32_t* out, unsigned long long* keys, cudaStream_t s) {
    if (rows == 0) return;
    check(cudaMemsetAsync(keys, 0, std::size_t(rows) * sizeof *keys, s), "cudaMemsetAsync");
    const dim3 grid(unsigned((cols + kArgmaxChunk - 1) / kArgmaxChunk), unsigned(rows));
    launch_early(argmax_kernel, grid, 256, 0, s, logits, cols, keys);
    launch_early(argmax_index_kernel, 1, 256, 0, s, keys, rows, out);
    launched("argmax_rows");
}

}  // namespace lumen::cuda
