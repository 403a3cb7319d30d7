#include "engine/backend/cuda_backend.h"

#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/util/error.h"
#include "engine/util/thread_pool.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

namespace lumen {
namespace {

namespace k = lumen::cuda;

void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

k::DataType kernel_type(DType t) {
    switch (t) {
    case DType::F32: return k::DataType::F32;
    case DType::F16: return k::DataType::F16;
    case DType::BF16: return k::DataType::BF16;
    default: throw Error("CUDA backend: type " + std::string(dtype_name(t)) + " is not supported");
    }
}

std::string gib(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(1ull << 30));
    return buf;
}

// Pinned host memory, for transfers the GPU can overlap with work.
class PinnedBuffer {
public:
    explicit PinnedBuffer(std::size_t bytes = 0) { resize(bytes); }
    ~PinnedBuffer() {
        if (data_) cudaFreeHost(data_);
    }
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    void resize(std::size_t bytes) {
        if (bytes <= size_) return;
        if (data_) cudaFreeHost(data_);
        data_ = nullptr;
        check(cudaMallocHost(&data_, bytes), "cudaMallocHost");
        size_ = bytes;
    }
    std::byte* data() { return static_cast<std::byte*>(data_); }

private:
    void* data_ = nullptr;
    std::size_t size_ = 0;
};

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int device) : device_(device) {
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
            cudaGetLastError();
            throw Error("no usable NVIDIA GPU (the CUDA driver reports none); use --device cpu");
        }
        if (device >= count) throw Error("CUDA device " + std::to_string(device) + " does not exist");
        check(cudaSetDevice(device), "cudaSetDevice");
        // A context that an earlier model's sticky error left broken fails every call: start afresh
        // (that model's engine is gone; its memory goes with the old context).
        if (k::is_sticky(cudaFree(nullptr))) {
            cudaDeviceReset();
            check(cudaSetDevice(device), "cudaSetDevice");
        }
        cudaDeviceProp prop{};
        check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
        name_ = prop.name;
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        // A fixed workspace: cuBLASLt must not allocate while a CUDA graph is being recorded.
        check(cudaMalloc(&gemm_workspace_, kGemmWorkspace), "cudaMalloc");
        gemm_ = std::make_unique<k::Gemm>(stream_, gemm_workspace_, kGemmWorkspace);
        for (auto& e : staging_done_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
        check(cudaEventCreateWithFlags(&batch_done_, cudaEventDisableTiming), "cudaEventCreate");
        for (auto& b : staging_) b.resize(kStagingBytes);
        profiling_ = std::getenv("LUMEN_PROFILE") != nullptr;
    }

    ~CudaBackend() override {
        cudaStreamSynchronize(stream_);
        report_profile();
        for (auto& [p, bytes] : allocations_) cudaFree(p);
        if (kv_) cudaFree(kv_);
        for (auto& e : staging_done_) cudaEventDestroy(e);
        cudaEventDestroy(batch_done_);
        drop_graphs();
        gemm_.reset();
        cudaFree(gemm_workspace_);
        if (partial_) cudaFree(partial_);
        if (batch_device_) cudaFree(batch_device_);
        cudaStreamDestroy(stream_);
    }

    std::string name() const override { return "cuda:" + std::to_string(device_) + " (" + name_ + ")"; }
    DType compute_dtype() const override { return compute_; }
    void set_compute_dtype(DType t) override {
        kernel_type(t);
        compute_ = t;
    }
    bool device_lost() override {
        const cudaError_t e = cudaStreamQuery(stream_);
        return e != cudaSuccess && e != cudaErrorNotReady && k::is_sticky(e);
    }
    uint64_t free_memory() override {
        size_t free_bytes = 0, total = 0;
        check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
        return free_bytes;
    }
    DeviceInfo device() override {
        DeviceInfo d{"cuda:" + std::to_string(device_), name_, 0, 0, 0, 0};
        size_t free_bytes = 0, total = 0;
        check(cudaSetDevice(device_), "cudaSetDevice");
        check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
        check(cudaDeviceGetAttribute(&d.compute_major, cudaDevAttrComputeCapabilityMajor, device_), "cudaDeviceGetAttribute");
        check(cudaDeviceGetAttribute(&d.compute_minor, cudaDevAttrComputeCapabilityMinor, device_), "cudaDeviceGetAttribute");
        d.total_memory = total;
        d.free_memory = free_bytes;
        return d;
    }

    Tensor weight(const void* host, DType dtype, int64_t rows, int64_t cols) override {
        // Weights live on the GPU in the compute type; conversions happen on the way, in the
        // pinned staging buffers, while the previous chunk is being copied.
        const std::size_t n = std::size_t(rows * cols);
        auto* dst = static_cast<std::byte*>(allocate(n * dtype_size(compute_), "the model's weights"));
        upload(static_cast<const std::byte*>(host), dtype, n, dst, compute_, "copying weights to the GPU");
        return Tensor{dst, compute_, rows, cols, cols};
    }

    Tensor random_weight(DType dtype, int64_t rows, int64_t cols, uint64_t seed, float center, float scale) override {
        void* p = allocate(std::size_t(rows * cols) * dtype_size(dtype), "the model's weights");
        k::random_fill(kernel_type(dtype), p, rows * cols, seed, center, scale, stream_);
        return Tensor{p, dtype, rows, cols, cols};
    }

    Tensor activation(int64_t rows, int64_t cols, DType dtype) override {
        void* p = allocate(std::size_t(std::max<int64_t>(1, rows * cols)) * dtype_size(dtype), "activations");
        return Tensor{p, dtype, rows, cols, cols};
    }

    void release(Tensor& t) override {
        if (const auto it = allocations_.find(t.data); it != allocations_.end()) {
            cudaStreamSynchronize(stream_);
            drop_graphs();  // recordings may point at this memory
            cudaFree(t.data);
            allocations_.erase(it);
        }
        t = Tensor{};
    }

    void allocate_kv_cache(const KvCacheShape& shape) override {
        if (kv_) {
            cudaStreamSynchronize(stream_);
            drop_graphs();
            cudaFree(kv_);
            kv_ = nullptr;
        }
        kv_shape_ = shape;
        kv_shape_.dtype = compute_;
        const uint64_t bytes = uint64_t(shape.block_elements()) * uint64_t(shape.num_blocks) * dtype_size(compute_);
        if (cudaMalloc(&kv_, bytes) != cudaSuccess) {
            cudaGetLastError();
            kv_ = nullptr;
            throw Error("the KV cache needs " + gib(bytes) + " of GPU memory but only " + gib(free_memory()) +
                        " is free; lower cache_max_entry_count or session_len");
        }
    }
    const KvCacheShape& kv_cache_shape() const override { return kv_shape_; }

    void read(const Tensor& t, std::span<float> out) override {
        const std::size_t n = std::size_t(t.rows * t.cols);
        if (out.size() < n) throw Error("CUDA backend: read buffer too small");
        if (t.dtype == DType::F32) {
            check(cudaMemcpyAsync(out.data(), t.data, n * 4, cudaMemcpyDeviceToHost, stream_), "reading from the GPU");
        } else {
            float* tmp = static_cast<float*>(scratch(n * 4));
            k::to_f32(kernel_type(t.dtype), t.data, int64_t(n), tmp, stream_);
            check(cudaMemcpyAsync(out.data(), tmp, n * 4, cudaMemcpyDeviceToHost, stream_), "reading from the GPU");
        }
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }

    void write(Tensor t, std::span<const float> values) override {
        const std::size_t n = std::size_t(t.rows * t.cols);
        if (values.size() < n) throw Error("CUDA backend: write source too small");
        upload(reinterpret_cast<const std::byte*>(values.data()), DType::F32, n, static_cast<std::byte*>(t.data), t.dtype,
               "writing to the GPU");
    }

    void write_u8(Tensor t, std::span<const uint8_t> values) override {
        if (t.dtype != DType::U8 || t.stride != t.cols) throw Error("CUDA backend: write_u8 wants a contiguous U8 tensor");
        const std::size_t n = std::size_t(t.rows * t.cols);
        if (values.size() < n) throw Error("CUDA backend: write source too small");
        upload(reinterpret_cast<const std::byte*>(values.data()), DType::U8, n, static_cast<std::byte*>(t.data), DType::U8,
               "writing to the GPU");
    }

    void begin_batch(const BatchLayout& batch, const RopeConfig& rope) override {
        if (profiling_ && pending_.size() > 4096) collect_profile();
        const Timed timed(*this, "batch upload");
        // Everything the kernels need about the batch, in one copy.
        const std::size_t T = batch.token_ids.size(), S_blocks = batch.block_tables.size(), L = batch.logit_rows.size();
        // Prompt batches get query tiles: runs of consecutive tokens of one sequence, as long as
        // the prompt attention kernel takes.
        query_tiles_.clear();
        if (int32_t(T) > kGraphMaxTokens) {
            const auto tile_rows = std::size_t(k::prompt_query_rows(kernel_type(compute_), kv_shape_.head_dim, kv_shape_.block_size));
            for (std::size_t i = 0; i < T;) {
                std::size_t n = 1;
                while (i + n < T && n < tile_rows && batch.token_seq[i + n] == batch.token_seq[i]) ++n;
                query_tiles_.push_back(int32_t(i));
                query_tiles_.push_back(int32_t(n));
                i += n;
            }
        }
        const std::size_t Q = query_tiles_.size();
        const std::size_t ints = 3 * T + S_blocks + L + Q;
        const std::size_t bytes = ints * 4 + T * 4;
        check(cudaEventSynchronize(batch_done_), "cudaEventSynchronize");  // the previous copy has left
        batch_host_.resize(bytes);
        auto* p = reinterpret_cast<int32_t*>(batch_host_.data());
        std::memcpy(p, batch.token_ids.data(), T * 4);
        std::memcpy(p + T, batch.positions.data(), T * 4);
        std::memcpy(p + 2 * T, batch.token_seq.data(), T * 4);
        std::memcpy(p + 3 * T, batch.block_tables.data(), S_blocks * 4);
        std::memcpy(p + 3 * T + S_blocks, batch.logit_rows.data(), L * 4);
        std::memcpy(p + 3 * T + S_blocks + L, query_tiles_.data(), Q * 4);
        auto* bases = reinterpret_cast<float*>(p + ints);
        for (std::size_t t = 0; t < T; ++t) bases[t] = float(rope_base(rope, batch.rope_lengths[t]));
        if (bytes > batch_device_bytes_) {
            if (batch_device_) {
                cudaStreamSynchronize(stream_);
                drop_graphs();
                cudaFree(batch_device_);
            }
            batch_device_bytes_ = std::max<std::size_t>(bytes * 2, 1 << 16);
            check(cudaMalloc(&batch_device_, batch_device_bytes_), "cudaMalloc");
        }
        check(cudaMemcpyAsync(batch_device_, batch_host_.data(), bytes, cudaMemcpyHostToDevice, stream_), "copying the batch");
        check(cudaEventRecord(batch_done_, stream_), "cudaEventRecord");
        auto* d = static_cast<int32_t*>(batch_device_);
        // A decode step: no sequence has two tokens here.
        std::vector<int32_t> seqs(batch.token_seq);
        std::sort(seqs.begin(), seqs.end());
        const bool decode = std::adjacent_find(seqs.begin(), seqs.end()) == seqs.end();
        batch_ = k::Batch{d, d + T, d + 2 * T, reinterpret_cast<const float*>(d + ints), d + 3 * T, d + 3 * T + S_blocks,
                          d + 3 * T + S_blocks + L, int32_t(Q / 2), int32_t(decode), int32_t(T), int32_t(L), batch.max_blocks};
        linear_factor_ = rope.scaling.type == RopeScaling::Type::Linear ? float(rope.scaling.factor) : 1.0f;
        // Rounded up so that consecutive decode steps share one attention split (and one graph).
        max_len_ = 0;
        for (int32_t position : batch.positions) max_len_ = std::max(max_len_, position + 1);
        max_len_ = (max_len_ + 127) / 128 * 128;
        if (!partial_) {
            check(cudaMalloc(reinterpret_cast<void**>(&partial_), kPartialFloats * sizeof(float)), "cudaMalloc");
            check(cudaMemsetAsync(partial_, 0, kPartialFloats * sizeof(float), stream_), "cudaMemsetAsync");  // the kernel's counters
        }
        graph_key_ = GraphKey{int32_t(T), int32_t(L), batch.max_blocks, max_len_, int32_t(decode)};
    }

    void run_forward(const std::function<void()>& ops) override {
        // Decode steps (few tokens) are recorded once per shape and replayed: one launch instead
        // of hundreds. Prompt chunks vary too much to be worth recording.
        if (profiling_ || graph_key_.tokens > kGraphMaxTokens) {
            ops();
            return;
        }
        auto it = graphs_.find(graph_key_);
        if (it == graphs_.end()) it = graphs_.emplace(graph_key_, capture(ops)).first;
        check(cudaGraphLaunch(it->second, stream_), "cudaGraphLaunch");
    }

    // The work `ops` queues on the stream, recorded (not run) as an executable graph.
    cudaGraphExec_t capture(const std::function<void()>& ops) {
        check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        cudaGraph_t graph = nullptr;
        try {
            ops();
        } catch (...) {
            cudaStreamEndCapture(stream_, &graph);
            if (graph) cudaGraphDestroy(graph);
            throw;
        }
        check(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
        cudaGraphExec_t exec = nullptr;
        const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
        cudaGraphDestroy(graph);
        check(status, "cudaGraphInstantiate");
        return exec;
    }

    void embed(const Tensor& table, const BatchLayout& batch, Tensor out) override {
        const Timed timed(*this, "embed");
        for (int32_t id : batch.token_ids)
            if (id < 0 || id >= table.rows)
                throw Error("token id " + std::to_string(id) + " is outside the embedding table (" + std::to_string(table.rows) +
                            " rows)");
        k::embed(kernel_type(table.dtype), table.data, table.cols, batch_.token_ids, batch_.num_tokens, f32(out), stream_);
    }

    void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
        const Timed timed(*this, "rms_norm");
        if (x.dtype == DType::F32 && x.stride == x.cols && out.stride == out.cols && out.dtype == weight.dtype) {
            k::rms_norm(kernel_type(out.dtype), f32(x), weight.data, eps, x.rows, x.cols, out.data, stream_);
            return;
        }
        // Other types or column views (the vision encoders' q/k norms).
        k::norm_rows(kernel_type(x.dtype), x.data, x.stride, kernel_type(out.dtype), out.data, out.stride, kernel_type(weight.dtype),
                     weight.data, nullptr, eps, true, x.rows, x.cols, stream_);
    }

    void add(Tensor x, const Tensor& delta, const Tensor* column_scale) override {
        const Timed timed(*this, "add");
        if (delta.cols != x.cols || delta.rows == 0 || x.rows % delta.rows != 0 || x.stride != x.cols || delta.stride != delta.cols)
            throw Error("CUDA backend: add shapes do not match");
        k::add_residual(kernel_type(delta.dtype), f32(x), delta.data, delta.rows, x.rows, x.cols,
                        column_scale ? kernel_type(column_scale->dtype) : k::DataType::F32, column_scale ? column_scale->data : nullptr,
                        stream_);
    }

    void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor out) override {
        if (x.cols != w.cols || out.cols != w.rows || out.rows != x.rows) throw Error("CUDA backend: linear shapes do not match");
        const Timed timed(*this, product_label("", x, w));
        // A few rows (decoding): our GEMV reads each weight once at full bandwidth, bias fused.
        if (k::gemv(kernel_type(w.dtype), x.data, x.rows, x.cols, w.data, w.rows, out.data, kernel_type(out.dtype),
                    {.bias = bias ? bias->data : nullptr}, stream_))
            return;
        if (bias && bias->dtype != out.dtype) throw Error("CUDA backend: a bias must have its output's type");
        gemm_->run(kernel_type(w.dtype), x.data, x.rows, x.cols, w.data, w.rows, bias ? bias->data : nullptr, out.data,
                   kernel_type(out.dtype));
    }

    // Decoding: one GEMV that writes silu(gate) * up; otherwise the GEMM and silu_mul.
    void linear_silu_mul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor gate_up, Tensor out) override {
        if (x.cols == w.cols && w.rows == 2 * out.cols && out.rows == x.rows && x.dtype == w.dtype && out.dtype == w.dtype &&
            (!bias || bias->dtype == w.dtype)) {
            const Timed timed(*this, product_label("SiLU + ", x, w));
            if (k::gemv(kernel_type(w.dtype), x.data, x.rows, x.cols, w.data, out.cols, out.data, kernel_type(out.dtype),
                        {.bias = bias ? bias->data : nullptr, .silu_gate = true}, stream_))
                return;
        }
        Backend::linear_silu_mul(x, w, bias, gate_up, out);
    }

    // Decoding: the q/k/v GEMV rotates its pairs and stores keys and values itself.
    void linear_rope_store_kv(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor qkv, const AttentionShape& shape,
                              const RopeConfig& rope, const BatchLayout& batch, int32_t layer) override {
        if (x.cols == w.cols && qkv.cols == w.rows && qkv.rows == x.rows && x.dtype == w.dtype && qkv.dtype == w.dtype &&
            (!bias || bias->dtype == w.dtype) && kv_ && kv_shape_.dtype == qkv.dtype) {
            const Timed timed(*this, product_label("RoPE + ", x, w));
            const k::RopeStore store{shape.num_heads, shape.num_kv_heads, shape.head_dim, linear_factor_, batch_, kv_, layer, kv_layout()};
            if (k::gemv(kernel_type(w.dtype), x.data, x.rows, x.cols, w.data, w.rows, qkv.data, kernel_type(qkv.dtype),
                        {.bias = bias ? bias->data : nullptr, .rope = &store}, stream_))
                return;
        }
        Backend::linear_rope_store_kv(x, w, bias, qkv, shape, rope, batch, layer);
    }

    // The product is added to the residual stream where it is made: in the GEMV, or by cuBLASLt
    // (beta = 1, without rounding the product first) when there is no bias.
    void linear_add(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor delta, Tensor residual) override {
        if (x.cols == w.cols && residual.cols == w.rows && residual.rows == x.rows && residual.dtype == DType::F32 &&
            residual.stride == residual.cols && x.dtype == w.dtype && (!bias || bias->dtype == w.dtype)) {
            const Timed timed(*this, product_label("+= ", x, w));
            if (k::gemv(kernel_type(w.dtype), x.data, x.rows, x.cols, w.data, w.rows, residual.data, k::DataType::F32,
                        {.bias = bias ? bias->data : nullptr, .accumulate = true}, stream_))
                return;
            if (!bias) {
                gemm_->run(kernel_type(w.dtype), x.data, x.rows, x.cols, w.data, w.rows, nullptr, residual.data, k::DataType::F32, true);
                return;
            }
        }
        Backend::linear_add(x, w, bias, delta, residual);
    }

    void rope_and_store_kv(Tensor qkv, const AttentionShape& shape, const RopeConfig&, const BatchLayout&,
                           int32_t layer) override {
        const Timed timed(*this, "rope_store_kv");
        k::rope_store_kv(kernel_type(qkv.dtype), qkv.data, shape.num_heads, shape.num_kv_heads, shape.head_dim, linear_factor_,
                         batch_, kv_, layer, kv_layout(), stream_);
    }

    void attention(const Tensor& qkv, const AttentionShape& shape, const BatchLayout&, int32_t layer, Tensor out) override {
        const Timed timed(*this, "attention");
        k::attention(kernel_type(qkv.dtype), qkv.data, shape.num_heads, shape.num_kv_heads, shape.head_dim, batch_, kv_, layer,
                     kv_layout(), out.data, max_len_, partial_, kPartialFloats, stream_);
    }

    void silu_mul(const Tensor& gate_up, Tensor out) override {
        const Timed timed(*this, "silu_mul");
        k::silu_mul(kernel_type(out.dtype), gate_up.data, out.rows, out.cols, out.data, stream_);
    }

    void gather_logit_rows(const Tensor& x, const BatchLayout&, Tensor out) override {
        const Timed timed(*this, "gather");
        k::gather_rows(f32(x), x.cols, batch_.logit_rows, batch_.num_logit_rows, f32(out), stream_);
    }

    void copy_kv_block(int32_t from, int32_t to) override {
        const std::size_t bytes = std::size_t(kv_shape_.block_elements()) * dtype_size(kv_shape_.dtype);
        check(cudaMemcpyAsync(static_cast<std::byte*>(kv_) + std::size_t(to) * bytes,
                              static_cast<std::byte*>(kv_) + std::size_t(from) * bytes, bytes, cudaMemcpyDeviceToDevice, stream_),
              "copying a KV block");
    }

    void argmax_rows(const Tensor& logits, std::span<int32_t> out) override {
        const Timed timed(*this, "argmax");
        // The ids, then the per-row keys (8-byte aligned after an even number of ids).
        const std::size_t id_bytes = (std::size_t(logits.rows) * 4 + 7) / 8 * 8;
        auto* d = static_cast<int32_t*>(scratch(id_bytes + std::size_t(logits.rows) * 8));
        k::argmax_rows(f32(logits), int32_t(logits.rows), logits.cols, d,
                       reinterpret_cast<unsigned long long*>(reinterpret_cast<std::byte*>(d) + id_bytes), stream_);
        check(cudaMemcpyAsync(out.data(), d, std::size_t(logits.rows) * 4, cudaMemcpyDeviceToHost, stream_), "reading ids");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }

    void sample_rows(const Tensor& logits, std::span<const SampleRow> rows, std::span<int32_t> out) override {
        const Timed timed(*this, "sample");
        if (int64_t(rows.size()) != logits.rows || out.size() != rows.size()) throw Error("CUDA backend: one sampling row per logits row");
        // Parameters and penalized ids go up in one copy; only the chosen ids come back.
        const std::size_t n = rows.size(), ids_offset = (n * 4 + 15) / 16 * 16, params_bytes = n * sizeof(k::SampleParams);
        std::size_t penalized = 0;
        for (const auto& r : rows) penalized += r.penalized.size();
        sample_host_.assign(params_bytes + penalized * 4, std::byte{0});
        auto* params = reinterpret_cast<k::SampleParams*>(sample_host_.data());
        auto* ids = reinterpret_cast<int32_t*>(sample_host_.data() + params_bytes);
        int32_t next = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const SamplingParams& p = rows[i].params;
            params[i] = {p.temperature, p.top_p, p.min_p, p.repetition_penalty, p.top_k, next, int32_t(rows[i].penalized.size()), rows[i].u};
            std::copy(rows[i].penalized.begin(), rows[i].penalized.end(), ids + next);
            next += int32_t(rows[i].penalized.size());
        }
        auto* device = static_cast<std::byte*>(scratch(ids_offset + sample_host_.size()));
        check(cudaMemcpyAsync(device + ids_offset, sample_host_.data(), sample_host_.size(), cudaMemcpyHostToDevice, stream_),
              "copying sampling parameters");
        k::sample_rows(f32(logits), int32_t(n), logits.cols, reinterpret_cast<const k::SampleParams*>(device + ids_offset),
                       reinterpret_cast<const int32_t*>(device + ids_offset + params_bytes), reinterpret_cast<int32_t*>(device), stream_);
        check(cudaMemcpyAsync(out.data(), device, n * 4, cudaMemcpyDeviceToHost, stream_), "reading ids");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }

    void layer_norm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor out) override {
        const Timed timed(*this, "layer_norm");
        k::norm_rows(kernel_type(x.dtype), x.data, x.stride, kernel_type(out.dtype), out.data, out.stride, kernel_type(weight.dtype),
                     weight.data, bias ? bias->data : nullptr, eps, false, x.rows, x.cols, stream_);
    }

    void add_norm(Tensor x, const Tensor& delta, const Tensor* column_scale, const Tensor& weight, const Tensor* bias, float eps, bool rms,
                  Tensor out) override {
        const DType t = delta.dtype;
        const bool fused = x.dtype == DType::F32 && x.stride == x.cols && delta.stride == delta.cols && out.stride == out.cols &&
                           delta.rows == x.rows && delta.cols == x.cols && out.rows == x.rows && out.cols == x.cols && out.dtype == t &&
                           weight.dtype == t && (!bias || bias->dtype == t) && (!column_scale || column_scale->dtype == t);
        if (fused) {
            const Timed timed(*this, "add + norm");
            if (k::add_norm_rows(kernel_type(t), f32(x), delta.data, column_scale ? column_scale->data : nullptr, weight.data,
                                 bias && !rms ? bias->data : nullptr, eps, rms, x.rows, x.cols, out.data, stream_))
                return;
        }
        Backend::add_norm(x, delta, column_scale, weight, bias, eps, rms, out);
    }

    void patch_rows(const Tensor& planes, const Tensor& levels, int64_t patch, Tensor out) override {
        const Timed timed(*this, "patch_rows");
        check_patch_rows(planes, levels, patch, out, "CUDA backend");
        if (levels.dtype != out.dtype || levels.stride != levels.cols || out.stride != out.cols || out.cols % 2 != 0)
            throw Error("CUDA backend: patch_rows wants contiguous levels and rows of one type, an even number of columns");
        k::patch_rows(kernel_type(out.dtype), planes.data, levels.data, levels.rows, planes.cols, patch, out.rows, out.cols, out.data,
                      stream_);
    }

    void activate(Tensor x, Activation kind) override {
        const Timed timed(*this, "activate");
        k::activate(kernel_type(x.dtype), x.data, x.rows, x.cols, x.stride,
                    kind == Activation::Gelu ? k::Activation::Gelu : k::Activation::QuickGelu, stream_);
    }


    void attention_full(const Tensor& qkv, int32_t heads, int32_t head_dim, int64_t group_rows, Tensor out) override {
        const Timed timed(*this, "attention_full");
        if (qkv.dtype != out.dtype || qkv.stride != qkv.cols || out.stride != out.cols)
            throw Error("CUDA backend: attention_full wants contiguous tensors of one type");
        k::attention_full(kernel_type(qkv.dtype), qkv.data, heads, head_dim, qkv.rows, group_rows, out.data, stream_);
    }

    Tensor indices(std::span<const int32_t> values, int64_t rows) override {
        check_row_indices(values, rows, "CUDA backend");
        Tensor t = activation(1, int64_t(values.size()), DType::I32);
        // From pageable memory the copy is staged before it returns: the caller may free `values`.
        check(cudaMemcpyAsync(t.data, values.data(), values.size() * 4, cudaMemcpyHostToDevice, stream_), "copying row indices");
        return t;
    }

    void gather_rows(const Tensor& src, const Tensor& index, Tensor out) override {
        const Timed timed(*this, "gather_rows");
        if (index.dtype != DType::I32 || out.stride != out.cols || index.cols * src.cols != out.rows * out.cols)
            throw Error("CUDA backend: gather_rows output has the wrong size");
        k::convert_rows(kernel_type(src.dtype), src.data, src.stride, kernel_type(out.dtype), out.data, src.cols, index.cols, src.cols,
                        static_cast<const int32_t*>(index.data), stream_);
    }

    // Recorded the second time (owner, key) comes (the first run makes cuBLASLt's plans and sets
    // kernel attributes, which a capture must not), replayed after; not while profiling.
    void run_recorded(const void* owner, int64_t key, const std::function<void()>& ops) override {
        if (profiling_) {
            ops();
            return;
        }
        Recording& r = recorded_[{owner, key}];
        if (!r.exec && !r.seen) {
            r.seen = true;
            ops();
            return;
        }
        if (!r.exec) r.exec = capture(ops);
        check(cudaGraphLaunch(r.exec, stream_), "cudaGraphLaunch");
    }

    void copy(const Tensor& src, Tensor dst) override {
        const Timed timed(*this, "copy");
        if (src.rows != dst.rows || src.cols != dst.cols) throw Error("CUDA backend: copy shapes differ");
        k::convert_rows(kernel_type(src.dtype), src.data, src.stride, kernel_type(dst.dtype), dst.data, dst.stride, src.rows, src.cols,
                        nullptr, stream_);
    }

    void synchronize() override { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

    double measure_read_bandwidth() override {
        const int64_t bytes = int64_t(1) << 30;
        void* p = allocate(std::size_t(bytes), "the bandwidth test");
        check(cudaMemsetAsync(p, 0, std::size_t(bytes), stream_), "cudaMemset");
        const double bw = k::read_bandwidth(p, bytes, stream_);
        Tensor t{p, DType::U8, 1, bytes, bytes};
        release(t);
        return bw;
    }

private:
    static constexpr std::size_t kStagingBytes = std::size_t(64) << 20;
    static constexpr int64_t kPartialFloats = int64_t(4) << 20;  // split-attention partial results
    static constexpr std::size_t kGemmWorkspace = std::size_t(32) << 20;
    static constexpr int32_t kGraphMaxTokens = 64;

    struct GraphKey {
        int32_t tokens = 0, logit_rows = 0, max_blocks = 0, max_len = 0, decode = 0;
        auto operator<=>(const GraphKey&) const = default;
    };

    void drop_graphs() {
        for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
        graphs_.clear();
        for (auto& [key, r] : recorded_)
            if (r.exec) cudaGraphExecDestroy(r.exec);
        recorded_.clear();
    }

    // LUMEN_PROFILE=1: GPU time per operation, printed when the backend closes.
    struct Timed {
        CudaBackend& b;
        const char* op;
        cudaEvent_t start = nullptr;
        Timed(CudaBackend& backend, const char* name) : b(backend), op(name) {
            if (!b.profiling_) return;
            cudaEventCreate(&start);
            cudaEventRecord(start, b.stream_);
        }
        ~Timed() {
            if (!b.profiling_) return;
            cudaEvent_t stop;
            cudaEventCreate(&stop);
            cudaEventRecord(stop, b.stream_);
            b.pending_.push_back({op, start, stop});
        }
    };
    struct PendingTiming {
        const char* op;
        cudaEvent_t start, stop;
    };
    // A lasting C string for a profile label.
    const char* label(std::string text) { return labels_.insert(std::move(text)).first->c_str(); }
    // Profiles tell the matrices apart.
    const char* product_label(const char* fused, const Tensor& x, const Tensor& w) {
        if (!profiling_) return "linear";
        return label(std::string(x.rows <= 8 ? "GEMV " : "GEMM ") + fused + std::to_string(w.cols) + "->" + std::to_string(w.rows));
    }
    void collect_profile() {
        for (auto& p : pending_) {
            cudaEventSynchronize(p.stop);
            float ms = 0;
            cudaEventElapsedTime(&ms, p.start, p.stop);
            auto& [total, calls] = profile_[p.op];
            total += ms;
            ++calls;
            cudaEventDestroy(p.start);
            cudaEventDestroy(p.stop);
        }
        pending_.clear();
    }
    void report_profile() {
        if (!profiling_) return;
        collect_profile();
        double all = 0;
        for (const auto& [op, v] : profile_) all += v.first;
        std::fprintf(stderr, "GPU time by operation (LUMEN_PROFILE):\n");
        for (const auto& [op, v] : profile_)
            std::fprintf(stderr, "  %-22s %10.1f ms %8d calls %8.1f us/call %5.1f%%\n", op.c_str(), v.first, v.second,
                         1000.0 * v.first / v.second, 100.0 * v.first / all);
    }

    static float* f32(const Tensor& t) {
        if (t.dtype != DType::F32) throw Error("CUDA backend: expected an fp32 tensor");
        return static_cast<float*>(t.data);
    }

    k::KvLayout kv_layout() const {
        return k::KvLayout{kv_shape_.num_layers, kv_shape_.num_kv_heads, kv_shape_.block_size, kv_shape_.head_dim};
    }

    void* allocate(std::size_t bytes, const char* what) {
        void* p = nullptr;
        if (cudaMalloc(&p, bytes) != cudaSuccess) {
            cudaGetLastError();
            throw Error(std::string("out of GPU memory for ") + what + ": " + gib(bytes) + " more needed, " +
                        gib(free_memory()) + " free");
        }
        allocations_[p] = bytes;
        return p;
    }

    // Device scratch for reads and ids, grown as needed.
    void* scratch(std::size_t bytes) {
        if (bytes > scratch_bytes_) {
            if (scratch_) {
                Tensor t{scratch_, DType::U8, 1, int64_t(scratch_bytes_), int64_t(scratch_bytes_)};
                release(t);
            }
            scratch_bytes_ = std::max<std::size_t>(bytes, 1 << 20);
            scratch_ = allocate(scratch_bytes_, "scratch");
        }
        return scratch_;
    }

    // Host values into device memory through the pinned staging buffers, converted on the way on
    // all cores while the previous chunk is being copied. Returns once the host values have been
    // read; the copies are ordered before later work on the stream.
    void upload(const std::byte* src, DType from, std::size_t n, std::byte* dst, DType to, const char* what) {
        const std::size_t out_elem = dtype_size(to), in_elem = dtype_size(from);
        // Conversions (an image's fp32 pixels) go in at least four chunks once there are a few MiB,
        // so that converting one overlaps copying another; same-type weights in chunks as large
        // as the staging buffer (one tensor's copy then overlaps the next tensor's staging).
        std::size_t chunk = kStagingBytes / std::max(out_elem, in_elem);
        if (from != to) chunk = std::min(chunk, std::max<std::size_t>(n / 4, std::size_t(1) << 20));
        for (std::size_t first = 0, i = 0; first < n; first += chunk, i ^= 1) {
            const std::size_t count = std::min(chunk, n - first);
            check(cudaEventSynchronize(staging_done_[i]), "cudaEventSynchronize");
            std::byte* stage = staging_[i].data();
            ThreadPool::shared().parallel_for(count, std::size_t(1) << 16, [&](std::size_t begin, std::size_t end) {
                convert(src + (first + begin) * in_elem, from, end - begin, stage + begin * out_elem, to);
            });
            check(cudaMemcpyAsync(dst + first * out_elem, stage, count * out_elem, cudaMemcpyHostToDevice, stream_), what);
            check(cudaEventRecord(staging_done_[i], stream_), "cudaEventRecord");
        }
    }

    // Host-side element conversion into the staging buffer.
    static void convert(const std::byte* src, DType from, std::size_t n, std::byte* dst, DType to) {
        if (from == to) {
            std::memcpy(dst, src, n * dtype_size(from));
            return;
        }
        // The types are chosen once, outside the loop, so that it compiles to straight conversions.
        auto with_reader = [&](auto&& body) {
            switch (from) {
            case DType::F32: return body([&](std::size_t i) { float v; std::memcpy(&v, src + 4 * i, 4); return v; });
            case DType::BF16: return body([&](std::size_t i) { uint16_t h; std::memcpy(&h, src + 2 * i, 2); return bf16_to_f32(h); });
            case DType::F16: return body([&](std::size_t i) { uint16_t h; std::memcpy(&h, src + 2 * i, 2); return f16_to_f32(h); });
            default: throw Error("CUDA backend: cannot convert weights of type " + std::string(dtype_name(from)));
            }
        };
        with_reader([&](auto read) {
            switch (to) {
            case DType::F32:
                for (std::size_t i = 0; i < n; ++i) {
                    const float v = read(i);
                    std::memcpy(dst + 4 * i, &v, 4);
                }
                break;
            case DType::BF16:
                for (std::size_t i = 0; i < n; ++i) {
                    const uint16_t h = f32_to_bf16(read(i));
                    std::memcpy(dst + 2 * i, &h, 2);
                }
                break;
            default:
                for (std::size_t i = 0; i < n; ++i) {
                    const uint16_t h = f32_to_f16(read(i));
                    std::memcpy(dst + 2 * i, &h, 2);
                }
                break;
            }
        });
    }

    int device_;
    std::string name_;
    cudaStream_t stream_ = nullptr;
    std::unique_ptr<k::Gemm> gemm_;
    DType compute_ = DType::BF16;
    std::map<void*, std::size_t> allocations_;
    PinnedBuffer staging_[2];
    cudaEvent_t staging_done_[2] = {};
    void* kv_ = nullptr;
    KvCacheShape kv_shape_;
    PinnedBuffer batch_host_;
    cudaEvent_t batch_done_ = nullptr;
    void* batch_device_ = nullptr;
    std::size_t batch_device_bytes_ = 0;
    k::Batch batch_;
    bool profiling_ = false;
    void* gemm_workspace_ = nullptr;
    GraphKey graph_key_;
    std::map<GraphKey, cudaGraphExec_t> graphs_;
    struct Recording {
        bool seen = false;
        cudaGraphExec_t exec = nullptr;
    };
    std::map<std::pair<const void*, int64_t>, Recording> recorded_;  // run_recorded's, by owner and key
    std::vector<PendingTiming> pending_;
    std::map<std::string, std::pair<double, int>> profile_;
    std::vector<int32_t> query_tiles_;
    std::set<std::string> labels_;
    std::vector<std::byte> sample_host_;
    float linear_factor_ = 1.0f;
    int32_t max_len_ = 0;
    float* partial_ = nullptr;
    void* scratch_ = nullptr;
    std::size_t scratch_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

}  // namespace lumen
