#pragma once
// Tensor-core attention for prompts and images (fp16/bf16, head_dim 64 or 128). The launchers
// return false, doing nothing, for what they do not cover; the callers then use their CUDA-core
// kernels.
#include "kernels/ops.h"

namespace lumen::cuda::detail {


// Whether the tensor-core kernels take this type and head size (and, for prompts, KV block size).
bool flash_attention_covers(DataType t, int32_t head_dim);
bool flash_prompt_attention_covers(DataType t, int32_t head_dim, int32_t block_size);

// Rows of queries one block of the tensor-core kernels holds; prompt query tiles may be this long.
int32_t flash_query_rows(int32_t head_dim);

// Unmasked attention within each group of `group_rows` rows, as attention_full.
bool flash_attention_full(DataType t, const void* qkv, int32_t heads, int32_t head_dim, int64_t rows, int64_t group_rows,
                          void* out, cudaStream_t s);

// The same on Hopper's warpgroup tensor cores (flash_attention_sm90.cu): compute capability 9.0,
// head_dim 64, 16-bit types.
bool wgmma_attention_full(DataType t, const void* qkv, int32_t heads, int32_t head_dim, int64_t rows, int64_t group_rows,
                          void* out, cudaStream_t s);

// Causal attention of each prompt query tile (up to flash_query_rows tokens of one sequence) over
// its sequence's cached keys and values, as attention.
bool flash_attention_prompt(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& b,
                            const void* pool, int32_t layer, const KvLayout& kv, void* out, cudaStream_t s);

}  // namespace lumen::cuda::detail
