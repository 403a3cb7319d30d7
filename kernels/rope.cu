// Rotary embeddings applied to q and k, and k and v stored in the paged cache. CPU reference:
// CpuBackend::rope_and_store_kv (engine/backend/cpu_backend.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/device_common.cuh"
#include "kernels/ops.h"

namespace lumen::cuda {
namespace {

using namespace detail;

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
    if (kv.bits) return;  // attention quantizes them
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

}  // namespace

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

}  // namespace lumen::cuda
