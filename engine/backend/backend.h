#pragma once
// The small set of operations the model forward is written against, in three parts (as ggml splits
// device, buffer and ops): what the backend runs on (device()), memory it hands out as Buffers that
// free themselves, and the ops. CpuBackend is the reference (fp32 math); the CUDA backend implements
// the same calls on the GPU. Tensors are 2-D row-major views of a Buffer or of host memory.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend/device.h"
#include "engine/backend/rope.h"
#include "engine/backend/sampling.h"
#include "engine/util/dtype.h"

namespace lumen {

struct Tensor {
    void* data = nullptr;
    DType dtype = DType::F32;
    int64_t rows = 0;
    int64_t cols = 0;
    int64_t stride = 0;  // elements from one row to the next (>= cols)

    bool empty() const { return data == nullptr; }
    // Rows [first, first + count) of this tensor.
    Tensor rows_view(int64_t first, int64_t count) const;
    // Columns [first, first + count) of every row.
    Tensor cols_view(int64_t first, int64_t count) const;
};

// Where a batch's tokens are and which KV blocks their sequences own. Built on the host by the
// scheduler for every forward step; tokens of one sequence are contiguous and in order.
struct BatchLayout {
    std::vector<int32_t> token_ids;     // [T]
    std::vector<int32_t> positions;     // [T] position of each token in its sequence
    std::vector<int32_t> token_seq;     // [T] index of the token's sequence in this batch
    std::vector<int32_t> rope_lengths;  // [T] sequence length that dynamic RoPE scaling sees
    std::vector<int32_t> block_tables;  // [S * max_blocks] KV block ids of each sequence
    int32_t max_blocks = 0;
    std::vector<int32_t> logit_rows;    // token indices whose next-token logits are wanted
    // Rows of image embeddings that replace the token embeddings of tokens [first, first + rows).
    struct Insert {
        Tensor rows;
        int32_t first = 0;
    };
    std::vector<Insert> inserts;

    int64_t num_tokens() const { return int64_t(token_ids.size()); }
};

// The paged KV cache: `num_blocks` blocks of `block_size` positions, each holding keys and values
// of every layer: [block][layer][k|v][kv_head], and in each of those [slot][head_dim] values of
// `dtype`, or with `bits` 8 or 4 (LMDeploy's quant_policy) [slot] rows of head_dim · bits / 8 bytes
// of unsigned codes (4 bits: element 2i in the low nibble of byte i) followed by [slot] (scale,
// zero) fp16 pairs, one per row: value = code · scale + zero, set when the row is stored
// (engine/backend/kv_quant.h).
struct KvCacheShape {
    int32_t num_layers = 0;
    int32_t num_kv_heads = 0;
    int32_t head_dim = 0;
    int32_t block_size = 64;
    int32_t num_blocks = 0;
    DType dtype = DType::F32;
    int32_t bits = 0;

    int64_t row_bytes() const { return bits ? int64_t(head_dim) * bits / 8 : int64_t(head_dim) * int64_t(dtype_size(dtype)); }
    // One (layer, k|v, kv_head) part of a block.
    int64_t head_bytes() const { return int64_t(block_size) * (row_bytes() + (bits ? 4 : 0)); }
    int64_t block_bytes() const { return int64_t(num_layers) * 2 * num_kv_heads * head_bytes(); }
};

struct AttentionShape {
    int32_t num_heads = 0;
    int32_t num_kv_heads = 0;
    int32_t head_dim = 0;
};

class Backend;

// Memory a backend allocated, given back to it when the Buffer goes (no release lists). Move-only;
// it must not outlive its backend. Converts to the Tensor it holds, so ops take it as it is.
class Buffer {
public:
    Buffer() = default;
    Buffer(Backend& owner, const Tensor& tensor) : owner_(&owner), tensor_(tensor) {}
    ~Buffer() { reset(); }
    Buffer(Buffer&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)), tensor_(std::exchange(other.tensor_, {})) {}
    Buffer& operator=(Buffer&& other) noexcept {
        if (this != &other) {
            reset();
            owner_ = std::exchange(other.owner_, nullptr);
            tensor_ = std::exchange(other.tensor_, {});
        }
        return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    const Tensor& tensor() const& { return tensor_; }
    operator const Tensor&() const& { return tensor_; }
    // A view of a Buffer about to go would dangle: refused at compile time.
    const Tensor& tensor() const&& = delete;
    operator const Tensor&() const&& = delete;
    bool empty() const { return tensor_.empty(); }
    Tensor rows_view(int64_t first, int64_t count) const { return tensor_.rows_view(first, count); }
    void reset();

private:
    Backend* owner_ = nullptr;
    Tensor tensor_;
};

// The matrix of a linear product, [out_features, in_features]. Formats are data, not code paths:
// each is one value here with its parts, and each backend dispatches on (format, epilogue) in its
// linear(). Checkpoint formats (AWQ, GPTQ, compressed-tensors) are re-laid into these at load.
struct Weight {
    enum class Format {
        Dense,  // values: 16- or 32-bit floats as the checkpoint has them (the compute type on a GPU)
        // values: [out, in / 8] I32, eight 4-bit codes a word, input column 8w + k in bits 4k..4k+3;
        // scales: [out, in / group_size] floats; zeros: [out, in / group_size] U8 codes (0-15);
        // w = (q - zero) · scale.
        Int4,
        Int8,  // values: [out, in] I8; scales: [out, 1] floats; w = q · scale (symmetric per channel)
        // values: [out, in] F8_E4M3 codes; scales: [out, ceil(in / group_size)] floats
        // (group_size = in: one scale per output channel); w = e4m3(q) · scale.
        Fp8,
    };
    Format format = Format::Dense;
    Tensor values, scales, zeros;
    int32_t group_size = 0;  // Int4, Fp8
    // 0: the codes as described above; otherwise a backend's own arrangement of them (made by its
    // quantized_weight, read only by its linear).
    int32_t layout = 0;
    // Empty, or [1, in] I32: the product reads x's columns in this order (GPTQ's activation order:
    // the columns sorted so that each group is contiguous).
    Tensor input_order;

    static Weight dense(const Tensor& values) { return Weight{Format::Dense, values, {}, {}, 0, 0, {}}; }
    int64_t out_features() const { return values.rows; }
    int64_t in_features() const { return format == Format::Int4 ? values.cols * 8 : values.cols; }
    bool empty() const { return values.empty(); }
};

// Scales along an FP8 weight's input: one per group_size inputs, the last group possibly short
// (block-scaled checkpoints); a group_size of 0 means one per output channel.
inline int64_t fp8_groups(int64_t in, int64_t group_size) { return group_size <= 0 ? 1 : (in + group_size - 1) / group_size; }

// A quantized weight's parts on the host, in the layout Weight describes (codes, fp32 scales, zeros,
// an optional input order), valid for the backend's lifetime like weight()'s `host`; without codes,
// random codes from `seed` (benchmarks), with every zero 8 and every scale `scale`.
struct QuantizedParts {
    Weight::Format format = Weight::Format::Int4;
    int64_t rows = 0, cols = 0;
    int32_t group_size = 0;  // Int4, Fp8
    const void* codes = nullptr;
    const float* scales = nullptr;
    const uint8_t* zeros = nullptr;
    const int32_t* input_order = nullptr;
    uint64_t seed = 0;
    float scale = 0;
};

// What a linear product does with its result x · wᵀ (+ bias) before it is written.
struct Epilogue {
    enum class Kind {
        None,         // out = the product
        SiluMul,      // out = silu(gate) · up, where [gate | up] is the product (out has half its columns)
        RopeStoreKv,  // out = the product as q | k | v, q and k rotated, k and v stored in the cache of `layer`
        AddTo,        // out (the fp32 residual stream) += the product
    };
    Kind kind = Kind::None;
    Tensor bias;       // one row added to the product; empty: none
    // Where a backend that does the step separately puts the product first (the fused forms leave it
    // as it was): [rows, out_features] of the compute type. Unused by None and RopeStoreKv.
    Tensor scratch;
    AttentionShape heads;  // RopeStoreKv
    int32_t layer = 0;     // RopeStoreKv

    static Epilogue plain(const Tensor& bias = {}) { return {Kind::None, bias, {}, {}, 0}; }
    static Epilogue silu_mul(const Tensor& bias, const Tensor& scratch) { return {Kind::SiluMul, bias, scratch, {}, 0}; }
    static Epilogue rope_store_kv(const Tensor& bias, const AttentionShape& heads, int32_t layer) {
        return {Kind::RopeStoreKv, bias, {}, heads, layer};
    }
    static Epilogue add_to(const Tensor& bias, const Tensor& scratch) { return {Kind::AddTo, bias, scratch, {}, 0}; }
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;

    // --- The device.
    // What the backend runs on, with its memory now (safe to ask from any thread).
    virtual DeviceInfo device() = 0;
    // Memory available for the KV cache now, in bytes.
    virtual uint64_t free_memory() = 0;
    // True once the device can run nothing more (a sticky CUDA error): every later call fails.
    virtual bool device_lost() { return false; }
    // Waits for queued work (for timing).
    virtual void synchronize() {}
    // Measured read bandwidth of the memory the weights live in, bytes per second.
    virtual double measure_read_bandwidth() = 0;

    // --- Memory.
    // The type of intermediate activations and the KV cache: F32 on the CPU, the model's type on a
    // GPU. The model sets it from its weights before it allocates anything.
    virtual DType compute_dtype() const = 0;
    virtual void set_compute_dtype(DType) {}
    // Weights: a device backend copies `host` before it returns; the CPU one uses it in place, so
    // there it must stay valid for the backend's lifetime (a mapped file, or buffers the model
    // keeps: only where weights_stay_on_host(), else re-laid weights would hold host memory twice).
    virtual Buffer weight(const void* host, DType dtype, int64_t rows, int64_t cols) = 0;
    virtual bool weights_stay_on_host() const { return false; }
    // Weights for benchmarks at real shapes without a checkpoint: uniform in
    // [center - scale/2, center + scale/2) (integer types: uniform bits, for quantized codes), a
    // pure function of `seed`, made where they are used.
    virtual Buffer random_weight(DType dtype, int64_t rows, int64_t cols, uint64_t seed, float center, float scale) = 0;
    // A quantized weight made from its parts, with the buffers that hold it. A backend may keep the
    // codes in a layout of its own (Weight::layout); by default they stay as described.
    struct OwnedWeight {
        Weight weight;
        std::vector<Buffer> buffers;
    };
    virtual OwnedWeight quantized_weight(const QuantizedParts& parts);
    // Scratch of `dtype`: F32 for the residual stream and logits, compute_dtype() for the rest.
    virtual Buffer activation(int64_t rows, int64_t cols, DType dtype) = 0;
    // Row indices for gather_rows ([1, n] I32); each must be in [0, rows) (lumen::Error otherwise).
    virtual Buffer indices(std::span<const int32_t> values, int64_t rows) = 0;
    // The paged KV cache, owned by the backend (made again by a second call).
    virtual void allocate_kv_cache(const KvCacheShape& shape) = 0;
    virtual const KvCacheShape& kv_cache_shape() const = 0;
    virtual void read(const Tensor& t, std::span<float> out) = 0;  // any float type to host fp32
    virtual void write(Tensor t, std::span<const float> values) = 0;  // host fp32 into a tensor of any float type
    virtual void write_u8(Tensor t, std::span<const uint8_t> values) = 0;  // host bytes into a U8 tensor

    // --- Ops of the language model.
    // The batch's layout, for every op of the forward that follows (a device backend copies it
    // over once per forward). The ops do not take it again.
    virtual void begin_batch(const BatchLayout& batch, const RopeConfig& rope) = 0;
    // Runs the operations of one forward pass. A device backend may record them the first time a
    // batch shape is seen (CUDA graphs) and replay the recording later without calling `ops`.
    virtual void run_forward(const std::function<void()>& ops) { ops(); }
    // out[t] = table[token t's id].
    virtual void embed(const Tensor& table, Tensor out) = 0;
    virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) = 0;  // out may be x
    // x += delta, or with `column_scale` (layer scale), x[r][c] += delta[r][c] · column_scale[c].
    // delta may have fewer rows than x where they divide x's: they repeat (position embeddings
    // added to every tile of an image at once).
    virtual void add(Tensor x, const Tensor& delta, const Tensor* column_scale = nullptr) = 0;
    // The one entry point of the products: x · wᵀ (+ bias), then `epilogue`, into `out`.
    virtual void linear(const Tensor& x, const Weight& w, const Epilogue& epilogue, Tensor out) = 0;
    // Causal attention of each token's query over its sequence's cached keys and values.
    virtual void attention(const Tensor& qkv, const AttentionShape& shape, int32_t layer, Tensor out) = 0;
    // out[i] = x[batch.logit_rows[i]].
    virtual void gather_logit_rows(const Tensor& x, Tensor out) = 0;
    // Copies KV blocks (for copy-on-write of a shared partial block).
    virtual void copy_kv_block(int32_t from, int32_t to) = 0;
    // The index of the largest value of each row: greedy sampling without moving logits.
    virtual void argmax_rows(const Tensor& logits, std::span<int32_t> out) = 0;
    // One token per row of fp32 logits (which are modified) with each row's processors, as
    // sample_logits does; only the chosen ids leave the device.
    struct SampleRow {
        SamplingParams params;
        std::vector<int32_t> penalized;     // distinct earlier tokens, for the repetition penalty
        std::vector<LoweredLogit> lowered;  // the presence and frequency penalties
        double u = 0;                       // the row's uniform draw in [0, 1)
    };
    virtual void sample_rows(const Tensor& logits, std::span<const SampleRow> rows, std::span<int32_t> out) = 0;

    // --- Ops of the vision encoders and projectors (activations F32 on the CPU).
    // out = (x - mean) / sqrt(var + eps) * weight + bias, per row; out may be x.
    virtual void layer_norm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor out) = 0;
    // The residual add and the next norm: x += delta (· column_scale), then out = LayerNorm(x)
    // (weight, bias), or with `rms` RMSNorm(x) (weight only). A backend may do both in one pass.
    virtual void add_norm(Tensor x, const Tensor& delta, const Tensor* column_scale, const Tensor& weight, const Tensor* bias, float eps,
                          bool rms, Tensor out) {
        add(x, delta, column_scale);
        if (rms) rms_norm(x, weight, eps, out);
        else layer_norm(x, weight, bias, eps, out);
    }
    // Square patches of images as rows, for the patch embedding's product. `planes` (U8) holds
    // images of `channels` planes of 8-bit samples, each size x size ([images · channels · size,
    // size], size = planes.cols), and `levels` ([channels, 256]) what each sample of a channel
    // stands for (the processor's rescale and normalisation); row t·g² + y·g + x of out
    // (g = size / patch) is patch (y, x) of image t: channel, then row, then column. Columns of out
    // past channels · patch² are zero.
    virtual void patch_rows(const Tensor& planes, const Tensor& levels, int64_t patch, Tensor out) = 0;
    enum class Activation { Gelu, QuickGelu };  // GELU with erf; x·sigmoid(1.702x)
    virtual void activate(Tensor x, Activation kind) = 0;  // in place
    // Attention without a mask within each group of `group_rows` consecutive rows (one image or
    // tile): qkv is [T, 3·H·D] as q | k | v, out is [T, H·D].
    virtual void attention_full(const Tensor& qkv, int32_t heads, int32_t head_dim, int64_t group_rows, Tensor out) = 0;
    // Rows of `src` (at least the `rows` its indices were made for) in the order of `index`,
    // written one after another into `out`'s memory (contiguous, index.cols · src.cols values).
    virtual void gather_rows(const Tensor& src, const Tensor& index, Tensor out) = 0;
    // dst = src, same shape, converting between float types.
    virtual void copy(const Tensor& src, Tensor dst) = 0;

    // Runs `ops`, which must queue the same work on the same memory each time for one (owner,
    // key); a device backend may record them the second time it sees the pair and replay the
    // recording from then on (CUDA graphs), until memory the recording uses is freed.
    virtual void run_recorded(const void* owner, int64_t key, const std::function<void()>& ops) {
        (void)owner, (void)key;
        ops();
    }

protected:
    friend class Buffer;
    // Gives back the memory of a Buffer this backend made.
    virtual void free(const Tensor& t) noexcept = 0;

private:
    std::deque<std::vector<uint8_t>> random_zeros_;  // the host side of random quantized weights' zeros
};

inline void Buffer::reset() {
    if (owner_) owner_->free(tensor_);
    owner_ = nullptr;
    tensor_ = {};
}

// The argument checks every backend makes (lumen::Error naming `who`): patch_rows' shapes, that
// row indices are in [0, rows), and the shapes of a linear product and its epilogue.
void check_patch_rows(const Tensor& planes, const Tensor& levels, int64_t patch, const Tensor& out, const char* who);
void check_row_indices(std::span<const int32_t> values, int64_t rows, const char* who);
void check_linear(const Tensor& x, const Weight& w, const Epilogue& epilogue, const Tensor& out, const char* who);
// A KV cache of 8- or 4-bit codes has heads of a multiple of 8 (lumen::Error naming `who` otherwise).
void check_kv_cache_shape(const KvCacheShape& shape, const char* who);
// A weight's parts agree with its format (lumen::Error naming `who` otherwise).
void check_weight(const Weight& w, const char* who);

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace lumen
