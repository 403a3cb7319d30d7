#pragma once
// Host launchers of Lumen's CUDA kernels. Pure functions over device pointers and shapes: tensors
// are row-major and contiguous; `DataType` is the type of activations, weights and the KV cache
// (the residual stream and logits are always fp32). Every launcher checks its launch and throws
// lumen::Error with the CUDA error text.
#include <cstdint>
#include <cuda_runtime.h>
#include <string>

namespace lumen::cuda {

enum class DataType { F32, F16, BF16 };

// Throws lumen::Error naming `what` if `status` is an error; a sticky error (the context is lost)
// has Error::Scope::Device.
void check(cudaError_t status, const char* what);
// Whether `status` is an error that leaves the context unusable (every later call fails with it).
bool is_sticky(cudaError_t status);
// What broke CUDA for the rest of this process (the first sticky error check() met); empty if none.
std::string lost_in_this_process();

// The ragged batch of one forward, on the device.
struct Batch {
    const int32_t* token_ids = nullptr;     // [T]
    const int32_t* positions = nullptr;     // [T]
    const int32_t* token_seq = nullptr;     // [T]
    const float* rope_base = nullptr;       // [T] RoPE base for each token (dynamic scaling applied)
    const int32_t* block_tables = nullptr;  // [S * max_blocks]
    const int32_t* logit_rows = nullptr;    // [L]
    // Prompt batches: runs of up to prompt_query_rows() consecutive tokens of one sequence, as
    // (first token, count) pairs; attention then shares each key/value tile across a run. Empty for decoding.
    const int32_t* query_tiles = nullptr;
    int32_t num_query_tiles = 0;
    // 1 when each token is its sequence's only one (a decode step): every cached position before
    // it was written by an earlier forward.
    int32_t decode = 0;
    int32_t num_tokens = 0;
    int32_t num_logit_rows = 0;
    int32_t max_blocks = 0;
};

// The paged KV pool: [block][layer][k|v][kv_head] parts, each [slot][head_dim] of DataType, or with
// `bits` 8 or 4 [slot] rows of head_dim · bits / 8 bytes of codes (4 bits: element 2i in the low
// nibble of byte i) then [slot] (scale, zero) __half2 pairs: value = code · scale + zero
// (kernels/kv_quant.cuh; CPU reference: engine/backend/kv_quant.cpp).
struct KvLayout {
    int32_t num_layers = 0;
    int32_t num_kv_heads = 0;
    int32_t block_size = 64;
    int32_t head_dim = 0;
    int32_t bits = 0;
};

void embed(DataType t, const void* table, int64_t hidden, const int32_t* ids, int32_t n, float* out, cudaStream_t s);
// out (t) = rms_norm(x) * w.
void rms_norm(DataType t, const float* x, const void* w, float eps, int64_t rows, int64_t cols, void* out, cudaStream_t s);
// x += delta, each column scaled by column_scale[c] when given (layer scale); delta's rows repeat
// over x's when it has fewer.
void add_residual(DataType t, float* x, const void* delta, int64_t delta_rows, int64_t rows, int64_t cols, DataType scale_type,
                  const void* column_scale, cudaStream_t s);
// Rotates q and k of every token in place (rotate-half RoPE) and stores k and v of `layer`; a cache
// of codes (kv.bits) is left to attention, which quantizes the rows as it needs them.
void rope_store_kv(DataType t, void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, float linear_factor,
                   const Batch& batch, void* kv_pool, int32_t layer, const KvLayout& kv, cudaStream_t s);
// The most tokens a prompt query tile (Batch::query_tiles) may hold for this type and KV cache.
int32_t prompt_query_rows(DataType t, const KvLayout& kv);
// Causal attention of each token over its sequence's cached keys and values (positions 0..p).
// `max_len` bounds every token's position + 1; long contexts are split over several blocks whose
// partial results go to `partial` (up to `partial_floats`, zeroed once when allocated: its end holds
// counters that the kernel leaves at zero) and are merged by the last block of each token and head.
// head_dim: a multiple of 8 up to 256; at most 8 query heads per key/value head. With a cache of
// codes the batch's keys and values (rotated in qkv) are quantized into it first.
void attention(DataType t, const void* qkv, int32_t heads, int32_t kv_heads, int32_t head_dim, const Batch& batch,
               void* kv_pool, int32_t layer, const KvLayout& kv, void* out, int32_t max_len, float* partial,
               int64_t partial_floats, cudaStream_t s);
// out = silu(gate) * up, gate_up = [rows, 2 * inter].
void silu_mul(DataType t, const void* gate_up, int64_t rows, int64_t inter, void* out, cudaStream_t s);
void gather_rows(const float* x, int64_t cols, const int32_t* rows, int32_t n, float* out, cudaStream_t s);
// What one row of logits is sampled with (see sample_logits on the host).
struct SampleParams {
    float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f, repetition_penalty = 1.0f;
    int32_t top_k = 0;
    int32_t penalized_begin = 0, penalized_count = 0;  // the row's ids in the penalized array
    int32_t lowered_begin = 0, lowered_count = 0;      // the row's entries in the lowered array
    double u = 0;                                      // the row's uniform draw
};
// A logit lowered by the presence and frequency penalties (the engine's LoweredLogit).
struct LoweredLogit {
    int32_t id;
    float by;
};
// One token per row of fp32 logits (modified in place); greedy rows take the first maximum.
void sample_rows(float* logits, int32_t rows, int64_t vocab, const SampleParams* params, const int32_t* penalized,
                 const LoweredLogit* lowered, int32_t* out, cudaStream_t s);
// First index of the maximum of each row (NaNs ignored; 0 for a row of NaNs); `keys` is room for
// one 64-bit value per row.
void argmax_rows(const float* logits, int32_t rows, int64_t cols, int32_t* out, unsigned long long* keys, cudaStream_t s);
void to_f32(DataType t, const void* src, int64_t n, float* dst, cudaStream_t s);
// Uniform values in [center - scale/2, center + scale/2), the same function of (seed, index) as the CPU's.
void random_fill(DataType t, void* dst, int64_t n, uint64_t seed, float center, float scale, cudaStream_t s);
// `bytes` uniformly random bytes (quantized codes for benchmarks), a pure function of `seed`, each
// 8-byte word and-ed with `mask`.
void random_bytes(void* dst, int64_t bytes, uint64_t seed, uint64_t mask, cudaStream_t s);
// out[r][c] = x[r][order[c]] (GPTQ's activation order), rows × cols of type t, contiguous.
void gather_columns(DataType t, const void* x, const int32_t* order, int64_t rows, int64_t cols, void* out, cudaStream_t s);
// What rope_store_kv does, for the q/k/v product of a decode step (see GemvOptions::rope).
struct RopeStore {
    int32_t heads = 0, kv_heads = 0, head_dim = 0;
    float linear_factor = 1.0f;
    Batch batch;  // one token per row of x
    void* pool = nullptr;
    int32_t layer = 0;
    KvLayout kv;
};
// A weight of 4- or 8-bit codes (the engine's Weight::Format::Int4 / Int8 / Fp8): w is [rows, in ·
// bits / 8] bytes of codes (4-bit: input 8j + i of a row in bits 4i of its j-th 32-bit word), scales
// [rows, groups] of the activation type (FP8: fp32), zeros [rows, groups] bytes (4-bit only);
// w = (q - zero) · scale (8-bit: signed q · scale, group_size = in; FP8: e4m3(q) · scale, groups
// of group_size inputs, the last possibly short).
struct QuantizedWeight {
    int bits = 4;
    const void* scales = nullptr;
    const uint8_t* zeros = nullptr;
    int64_t group_size = 0;
    bool float8 = false;
};
struct GemvOptions {
    const void* bias = nullptr;          // t, out_features values (2 · out_features when gated)
    const QuantizedWeight* quantized = nullptr;  // w holds codes (see QuantizedWeight); 16-bit otherwise
    bool silu_gate = false;              // w has 2 · out_features rows, gate then up: out = silu(gate) · up
    bool accumulate = false;             // out is fp32 and gets the product (rounded to t) added
    const RopeStore* rope = nullptr;     // out is q/k/v: then rope_store_kv as that function does
};
// Decoding's products: out = x · wᵀ (+ bias) for 1 to 8 rows of x with 16-bit weights or 4/8-bit
// codes (inputs a multiple of 32, groups of a multiple of 32), each weight read once, with the
// options' step fused after. Returns false, doing
// nothing, for shapes it does not handle (then use gemm).
bool gemv(DataType t, const void* x, int64_t n, int64_t in, const void* w, int64_t out_features, void* out, DataType out_type,
          const GemvOptions& options, cudaStream_t s);
// Rows of x (type t) as FP8 E4M3 codes with one fp32 scale per row (its largest magnitude / 448),
// for cuBLASLt's FP8 products: codes [rows, cols], scales [rows].
void quantize_rows_fp8(DataType t, const void* x, int64_t rows, int64_t cols, uint8_t* codes, float* scales, cudaStream_t s);
// A quantized weight [rows, in] (see QuantizedWeight; codes `w`) as 16/32-bit values of type t,
// for products of many rows (the tensor-core GEMM then reads them).
void dequantize(DataType t, const void* w, const QuantizedWeight& q, int64_t rows, int64_t in, void* out, cudaStream_t s);
// 4-bit weights laid out for the tensor cores (w4a16.cu): codes re-laid by tile_int4_codes, scales
// [rows, in / group_size] of the activation type, zeros [rows, in / group_size] bytes.
struct Int4Tiles {
    const uint32_t* codes = nullptr;
    const void* scales = nullptr;
    const uint8_t* zeros = nullptr;
    int64_t group_size = 0;
};
// Whether a weight tiles on this device: rows and groups multiples of 16, inputs of 64, and a GPU
// of compute capability 8.0 or newer (the tensor-core instructions).
bool int4_tiles_fit(int64_t rows, int64_t in, int64_t group_size);
// On the host: canonical codes (QuantizedWeight's 4-bit layout) re-laid for w4a16, rows · in / 8 words.
void tile_int4_codes(const uint32_t* codes, int64_t rows, int64_t in, uint32_t* tiled);
// Products of 1 to 64 rows of x with tiled 4-bit weights on the tensor cores, with the options'
// step fused after as gemv does (its options' `quantized` unused). False, doing nothing, for what it
// does not handle (fp32, more rows, shapes that do not tile).
bool w4a16(DataType t, const void* x, int64_t n, int64_t in, const Int4Tiles& w, int64_t out_features, void* out, DataType out_type,
           const GemvOptions& options, cudaStream_t s);
// Tiled 4-bit weights expanded to [rows, in] of the 16-bit type t (for cuBLASLt).
void dequantize_tiles(DataType t, const Int4Tiles& w, int64_t rows, int64_t in, void* out, cudaStream_t s);
// Vision encoders and projectors (tensors may have row strides, in elements).
// out = LayerNorm (weight, optional bias) or, with `rms`, RMSNorm (weight only) of each row of x.
void norm_rows(DataType x_type, const void* x, int64_t x_stride, DataType out_type, void* out, int64_t out_stride, DataType w_type,
               const void* w, const void* bias, float eps, bool rms, int64_t rows, int64_t cols, cudaStream_t s);
// x (fp32, contiguous) += delta · scale (scale optional), then out = norm(x) as norm_rows does; delta,
// scale, w, bias and out of type t, all contiguous. False (nothing done) for rows of more than
// 2,048 values or not a multiple of 4.
bool add_norm_rows(DataType t, float* x, const void* delta, const void* scale, const void* w, const void* bias, float eps, bool rms,
                   int64_t rows, int64_t cols, void* out, cudaStream_t s);
// Image patches as rows (see Backend::patch_rows): 8-bit planes [images · channels · size, size],
// levels [channels, 256] of type t, out [rows, cols] of type t.
void patch_rows(DataType t, const void* planes, const void* levels, int64_t channels, int64_t size, int64_t patch, int64_t rows,
                int64_t cols, void* out,
                cudaStream_t s);
enum class Activation { Gelu, QuickGelu };  // GELU with erf; x·sigmoid(1.702x)
void activate(DataType t, void* x, int64_t rows, int64_t cols, int64_t stride, Activation kind, cudaStream_t s);
// Unmasked attention within each group of `group_rows` rows; qkv [rows, 3·heads·head_dim] as q | k | v,
// out [rows, heads·head_dim]. head_dim 16, 32, 64 or 128.
void attention_full(DataType t, const void* qkv, int32_t heads, int32_t head_dim, int64_t rows, int64_t group_rows, void* out,
                    cudaStream_t s);
// dst[r] = src[index ? index[r] : r] for `rows` rows of `cols` values, converting types.
void convert_rows(DataType src_type, const void* src, int64_t src_stride, DataType dst_type, void* dst, int64_t dst_stride,
                  int64_t rows, int64_t cols, const int32_t* index, cudaStream_t s);

// Bytes read per second by a streaming kernel over `bytes` of device memory.
double read_bandwidth(void* buffer, int64_t bytes, cudaStream_t s);

}  // namespace lumen::cuda
