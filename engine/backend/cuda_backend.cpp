// The CUDA backend's ops: kernels/ and cuBLASLt behind the Backend interface, on a CudaDevice
// (memory, uploads, recordings). Products dispatch on (weight format, epilogue) in linear() alone.
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

#include "engine/backend/cuda_device.h"
#include "engine/util/error.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

namespace lumen {
namespace {

namespace k = lumen::cuda;
using cuda::check;
using cuda_backend::CudaDevice;
using cuda_backend::Event;
using cuda_backend::gib;
using cuda_backend::PinnedBuffer;
using cuda_backend::RecordingKey;

k::DataType kernel_type(DType t) {
    switch (t) {
    case DType::F32: return k::DataType::F32;
    case DType::F16: return k::DataType::F16;
    case DType::BF16: return k::DataType::BF16;
    default: throw Error("CUDA backend: type " + std::string(dtype_name(t)) + " is not supported");
    }
}

float* f32(const Tensor& t) {
    if (t.dtype != DType::F32) throw Error("CUDA backend: expected an fp32 tensor");
    return static_cast<float*>(t.data);
}

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int device)
        : device_(device), gemm_workspace_(device_.allocate(kGemmWorkspace, "the GEMM workspace")),
          // A fixed workspace: cuBLASLt must not allocate while a CUDA graph is being recorded.
          gemm_(std::make_unique<k::Gemm>(device_.stream(), gemm_workspace_, kGemmWorkspace)),
          profiling_(std::getenv("LUMEN_PROFILE") != nullptr) {}

    ~CudaBackend() override {
        cudaStreamSynchronize(device_.stream());
        report_profile();
    }

    std::string name() const override { return "cuda:" + std::to_string(device_.index()) + " (" + device_.name() + ")"; }

    // --- The device.
    // Asked from any thread (the status bar's); a lost device reports no memory rather than throw.
    DeviceInfo device() override {
        DeviceInfo d{"cuda:" + std::to_string(device_.index()), device_.name(), device_.compute_major(), device_.compute_minor(), 0, 0};
        size_t free_bytes = 0, total = 0;
        if (cudaSetDevice(device_.index()) == cudaSuccess && cudaMemGetInfo(&free_bytes, &total) == cudaSuccess) {
            d.total_memory = total;
            d.free_memory = free_bytes;
        }
        return d;
    }
    uint64_t free_memory() override { return device_.free_memory(); }
    bool device_lost() override {
        const cudaError_t e = cudaStreamQuery(device_.stream());
        return e != cudaSuccess && e != cudaErrorNotReady && k::is_sticky(e);
    }
    void synchronize() override { check(cudaStreamSynchronize(device_.stream()), "cudaStreamSynchronize"); }
    double measure_read_bandwidth() override {
        const std::size_t bytes = std::size_t(1) << 30;
        const Buffer b = own(device_.allocate(bytes, "the bandwidth test"), DType::U8, 1, int64_t(bytes));
        check(cudaMemsetAsync(b.tensor().data, 0, bytes, device_.stream()), "cudaMemset");
        return k::read_bandwidth(b.tensor().data, int64_t(bytes), device_.stream());
    }

    // --- Memory.
    DType compute_dtype() const override { return compute_; }
    void set_compute_dtype(DType t) override {
        kernel_type(t);
        compute_ = t;
    }

    // Weights live on the GPU in the compute type; conversions happen on the way, in the pinned
    // staging buffers, while the previous chunk is being copied.
    Buffer weight(const void* host, DType dtype, int64_t rows, int64_t cols) override {
        const std::size_t n = std::size_t(rows * cols);
        if (dtype == DType::I32 || dtype == DType::I8 || dtype == DType::U8 || dtype == DType::F8_E4M3) {  // codes, zeros, orders: as they are
            Buffer b = own(device_.allocate(n * dtype_size(dtype), "the model's weights"), dtype, rows, cols);
            device_.upload(static_cast<const std::byte*>(host), dtype, n, static_cast<std::byte*>(b.tensor().data), dtype,
                           "copying weights to the GPU");
            return b;
        }
        Buffer b = own(device_.allocate(n * dtype_size(compute_), "the model's weights"), compute_, rows, cols);
        device_.upload(static_cast<const std::byte*>(host), dtype, n, static_cast<std::byte*>(b.tensor().data), compute_,
                       "copying weights to the GPU");
        return b;
    }
    Buffer random_weight(DType dtype, int64_t rows, int64_t cols, uint64_t seed, float center, float scale) override {
        if (dtype == DType::I32 || dtype == DType::I8 || dtype == DType::U8 || dtype == DType::F8_E4M3) {
            const std::size_t bytes = std::size_t(rows * cols) * dtype_size(dtype);
            Buffer b = own(device_.allocate((bytes + 7) / 8 * 8, "the model's weights"), dtype, rows, cols);
            // FP8 codes below 2 in magnitude (bit 6 of each byte clear), as the CPU backend makes them.
            const uint64_t mask = dtype == DType::F8_E4M3 ? 0xBFBFBFBFBFBFBFBFull : ~uint64_t(0);
            k::random_bytes(b.tensor().data, int64_t(bytes), seed, mask, device_.stream());
            return b;
        }
        Buffer b = own(device_.allocate(std::size_t(rows * cols) * dtype_size(dtype), "the model's weights"), dtype, rows, cols);
        k::random_fill(kernel_type(dtype), b.tensor().data, rows * cols, seed, center, scale, device_.stream());
        return b;
    }
    // 4-bit weights whose shapes tile are re-laid for the tensor cores (kernels/w4a16.cu); other
    // quantized weights keep the described layout. Either way the scratch their products need is
    // made now, while nothing is being recorded.
    OwnedWeight quantized_weight(const QuantizedParts& q) override {
        OwnedWeight out;
        if (q.format == Weight::Format::Fp8) {
            if (!runs_fp8(device())) throw Error(fp8_unsupported_message(device()));
            // The scales stay fp32 (the CPU reference's, and what cuBLASLt's FP8 products take).
            Weight& w = out.weight;
            w.format = Weight::Format::Fp8;
            w.group_size = q.group_size;
            const int64_t groups = fp8_groups(q.cols, q.group_size);
            auto keep = [&](Buffer b) {
                out.buffers.push_back(std::move(b));
                return out.buffers.back().tensor();
            };
            w.values = keep(q.codes ? weight(q.codes, DType::F8_E4M3, q.rows, q.cols) : random_weight(DType::F8_E4M3, q.rows, q.cols, q.seed, 0, 0));
            Buffer scales = own(device_.allocate(std::size_t(q.rows * groups) * 4, "the model's weights"), DType::F32, q.rows, groups);
            if (q.codes) {
                device_.upload(reinterpret_cast<const std::byte*>(q.scales), DType::F32, std::size_t(q.rows * groups),
                               static_cast<std::byte*>(scales.tensor().data), DType::F32, "copying weights to the GPU");
            } else {
                k::random_fill(k::DataType::F32, scales.tensor().data, q.rows * groups, q.seed + 1, q.scale, 0, device_.stream());
            }
            w.scales = keep(std::move(scales));
            grown(dequantized_, q.rows, q.cols, "expanded weights");
            if (q.group_size == q.cols) fp8_scratch(kGraphMaxTokens, q.cols);  // per channel: cuBLASLt's FP8 product past 8 rows
            return out;
        }
        if (q.format == Weight::Format::Int4 && compute_ != DType::F32 && k::int4_tiles_fit(q.rows, q.cols, q.group_size)) {
            Weight& w = out.weight;
            w.format = Weight::Format::Int4;
            w.layout = kInt4Tiles;
            w.group_size = q.group_size;
            const int64_t groups = q.cols / q.group_size;
            auto keep = [&](Buffer b) {
                out.buffers.push_back(std::move(b));
                return out.buffers.back().tensor();
            };
            if (q.codes) {
                std::vector<uint32_t> tiled(std::size_t(q.rows * q.cols / 8));
                k::tile_int4_codes(static_cast<const uint32_t*>(q.codes), q.rows, q.cols, tiled.data());
                w.values = keep(weight(tiled.data(), DType::I32, q.rows, q.cols / 8));
                w.scales = keep(weight(q.scales, DType::F32, q.rows, groups));
                w.zeros = keep(weight(q.zeros, DType::U8, q.rows, groups));
            } else {
                w.values = keep(random_weight(DType::I32, q.rows, q.cols / 8, q.seed, 0, 0));
                w.scales = keep(random_weight(compute_, q.rows, groups, q.seed + 1, q.scale, 0));
                const std::vector<uint8_t> eights(std::size_t(q.rows * groups), 8);
                w.zeros = keep(weight(eights.data(), DType::U8, q.rows, groups));
            }
            if (q.input_order) w.input_order = keep(weight(q.input_order, DType::I32, 1, q.cols));
        } else {
            out = Backend::quantized_weight(q);
        }
        grown(dequantized_, q.rows, q.cols, "expanded weights");
        if (q.input_order) grown(reordered_, kGraphMaxTokens, q.cols, "reordered activations");
        return out;
    }

    Buffer activation(int64_t rows, int64_t cols, DType dtype) override {
        return own(device_.allocate(std::size_t(std::max<int64_t>(1, rows * cols)) * dtype_size(dtype), "activations"), dtype, rows, cols);
    }
    Buffer indices(std::span<const int32_t> values, int64_t rows) override {
        check_row_indices(values, rows, "CUDA backend");
        Buffer b = activation(1, int64_t(values.size()), DType::I32);
        // From pageable memory the copy is staged before it returns: the caller may free `values`.
        check(cudaMemcpyAsync(b.tensor().data, values.data(), values.size() * 4, cudaMemcpyHostToDevice, device_.stream()),
              "copying row indices");
        return b;
    }

    void allocate_kv_cache(const KvCacheShape& shape) override {
        device_.free(kv_);
        kv_ = nullptr;
        check_kv_cache_shape(shape, "CUDA backend");
        kv_shape_ = shape;
        kv_shape_.dtype = compute_;
        const uint64_t bytes = uint64_t(kv_shape_.block_bytes()) * uint64_t(shape.num_blocks);
        try {
            kv_ = device_.allocate(bytes, "the KV cache");
        } catch (const Error&) {
            throw Error("the KV cache needs " + gib(bytes) + " of GPU memory but only " + gib(free_memory()) +
                        " is free; lower cache_max_entry_count or session_len");
        }
    }
    const KvCacheShape& kv_cache_shape() const override { return kv_shape_; }

    void read(const Tensor& t, std::span<float> out) override {
        const std::size_t n = std::size_t(t.rows * t.cols);
        if (out.size() < n) throw Error("CUDA backend: read buffer too small");
        cudaStream_t s = device_.stream();
        if (t.dtype == DType::F32) {
            check(cudaMemcpyAsync(out.data(), t.data, n * 4, cudaMemcpyDeviceToHost, s), "reading from the GPU");
        } else {
            float* tmp = static_cast<float*>(device_.scratch(n * 4));
            k::to_f32(kernel_type(t.dtype), t.data, int64_t(n), tmp, s);
            check(cudaMemcpyAsync(out.data(), tmp, n * 4, cudaMemcpyDeviceToHost, s), "reading from the GPU");
        }
        check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    }
    void write(Tensor t, std::span<const float> values) override {
        const std::size_t n = std::size_t(t.rows * t.cols);
        if (values.size() < n) throw Error("CUDA backend: write source too small");
        device_.upload(reinterpret_cast<const std::byte*>(values.data()), DType::F32, n, static_cast<std::byte*>(t.data), t.dtype,
                       "writing to the GPU");
    }
    void write_u8(Tensor t, std::span<const uint8_t> values) override {
        if (t.dtype != DType::U8 || t.stride != t.cols) throw Error("CUDA backend: write_u8 wants a contiguous U8 tensor");
        const std::size_t n = std::size_t(t.rows * t.cols);
        if (values.size() < n) throw Error("CUDA backend: write source too small");
        device_.upload(reinterpret_cast<const std::byte*>(values.data()), DType::U8, n, static_cast<std::byte*>(t.data), DType::U8,
                       "writing to the GPU");
    }

    // --- Ops of the language model.
    void begin_batch(const BatchLayout& batch, const RopeConfig& rope) override {
        if (profiling_ && pending_.size() > 4096) collect_profile();
        const OpScope op(*this, "batch upload", {});
        cudaStream_t s = device_.stream();
        // Everything the kernels need about the batch, in one copy.
        const std::size_t T = batch.token_ids.size(), S_blocks = batch.block_tables.size(), L = batch.logit_rows.size();
        // Prompt batches get query tiles: runs of consecutive tokens of one sequence, as long as
        // the prompt attention kernel takes.
        query_tiles_.clear();
        if (int32_t(T) > kGraphMaxTokens) {
            const auto tile_rows = std::size_t(k::prompt_query_rows(kernel_type(compute_), kv_layout()));
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
            device_.free(batch_device_);  // with the recordings that read it
            batch_device_ = nullptr;
            batch_device_bytes_ = std::max<std::size_t>(bytes * 2, 1 << 16);
            batch_device_ = device_.allocate(batch_device_bytes_, "the batch");
        }
        check(cudaMemcpyAsync(batch_device_, batch_host_.data(), bytes, cudaMemcpyHostToDevice, s), "copying the batch");
        check(cudaEventRecord(batch_done_, s), "cudaEventRecord");
        auto* d = static_cast<int32_t*>(batch_device_);
        // A decode step: no sequence has two tokens here.
        std::vector<int32_t> seqs(batch.token_seq);
        std::sort(seqs.begin(), seqs.end());
        const bool decode = std::adjacent_find(seqs.begin(), seqs.end()) == seqs.end();
        batch_ = k::Batch{d, d + T, d + 2 * T, reinterpret_cast<const float*>(d + ints), d + 3 * T, d + 3 * T + S_blocks,
                          d + 3 * T + S_blocks + L, int32_t(Q / 2), int32_t(decode), int32_t(T), int32_t(L), batch.max_blocks};
        linear_factor_ = rope.scaling.type == RopeScaling::Type::Linear ? float(rope.scaling.factor) : 1.0f;
        // Rounded up so that consecutive decode steps share one attention split (and one recording).
        max_len_ = 0;
        for (int32_t position : batch.positions) max_len_ = std::max(max_len_, position + 1);
        max_len_ = (max_len_ + 127) / 128 * 128;
        if (!partial_) {
            partial_ = static_cast<float*>(device_.allocate(kPartialFloats * sizeof(float), "attention's partial results"));
            check(cudaMemsetAsync(partial_, 0, kPartialFloats * sizeof(float), s), "cudaMemsetAsync");  // the kernel's counters
        }
        forward_key_ = RecordingKey{this, 0, int32_t(T), int32_t(L), batch.max_blocks, max_len_, int32_t(decode)};
    }

    // Decode steps (few tokens) are recorded once per shape and replayed: one launch instead of
    // hundreds. Prompt chunks vary too much to be worth recording.
    void run_forward(const std::function<void()>& ops) override {
        if (profiling_ || forward_key_.tokens > kGraphMaxTokens) {
            ops();
            return;
        }
        device_.run_recorded(forward_key_, false, {kv_, batch_device_, partial_}, ops);
    }

    // Token ids are checked against the vocabulary once, by the model, before the batch is made.
    void embed(const Tensor& table, Tensor out) override {
        const OpScope op(*this, "embed", {table.data, out.data});
        k::embed(kernel_type(table.dtype), table.data, table.cols, batch_.token_ids, batch_.num_tokens, f32(out), device_.stream());
    }

    void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
        const OpScope op(*this, "rms_norm", {x.data, weight.data, out.data});
        if (x.dtype == DType::F32 && x.stride == x.cols && out.stride == out.cols && out.dtype == weight.dtype) {
            k::rms_norm(kernel_type(out.dtype), f32(x), weight.data, eps, x.rows, x.cols, out.data, device_.stream());
            return;
        }
        // Other types or column views (the vision encoders' q/k norms).
        k::norm_rows(kernel_type(x.dtype), x.data, x.stride, kernel_type(out.dtype), out.data, out.stride, kernel_type(weight.dtype),
                     weight.data, nullptr, eps, true, x.rows, x.cols, device_.stream());
    }

    void add(Tensor x, const Tensor& delta, const Tensor* column_scale) override {
        const OpScope op(*this, "add", {x.data, delta.data, column_scale ? column_scale->data : nullptr});
        if (delta.cols != x.cols || delta.rows == 0 || x.rows % delta.rows != 0 || x.stride != x.cols || delta.stride != delta.cols)
            throw Error("CUDA backend: add shapes do not match");
        k::add_residual(kernel_type(delta.dtype), f32(x), delta.data, delta.rows, x.rows, x.cols,
                        column_scale ? kernel_type(column_scale->dtype) : k::DataType::F32, column_scale ? column_scale->data : nullptr,
                        device_.stream());
    }

    // The one place products are dispatched: decoding (up to 8 rows) takes our GEMV, which reads
    // each weight once at full bandwidth (4- and 8-bit codes dequantized in registers) with the
    // epilogue folded in; more rows take cuBLASLt (quantized weights expanded to the compute type
    // first), the bias in its epilogue, the residual add as beta = 1 where there is no bias, the
    // rest as a kernel of its own over the product.
    void linear(const Tensor& x_in, const Weight& w, const Epilogue& e, Tensor out) override {
        check_linear(x_in, w, e, out, "CUDA backend");
        const bool quantized = w.format != Weight::Format::Dense;
        const int64_t n_out = w.out_features(), in = w.in_features();
        const void* bias = e.bias.empty() ? nullptr : e.bias.data;
        const OpScope op(*this, product_label(e.kind, x_in, n_out, in),
                         {x_in.data, w.values.data, w.scales.data, w.zeros.data, w.input_order.data, bias, out.data, e.scratch.data});
        cudaStream_t s = device_.stream();
        // GPTQ's activation order: x's columns in the order of the weight's groups.
        Tensor x = x_in;
        if (!w.input_order.empty()) {
            x = grown(reordered_, x_in.rows, in, "reordered activations");
            device_.uses({x.data});  // a recording made now is dropped when a longer prompt regrows it
            k::gather_columns(kernel_type(x_in.dtype), x_in.data, static_cast<const int32_t*>(w.input_order.data), x_in.rows, in, x.data, s);
        }
        const DType weight_type = w.format == Weight::Format::Fp8 ? compute_ : quantized ? w.scales.dtype : w.values.dtype;
        const k::DataType wt = kernel_type(weight_type);
        k::QuantizedWeight q;
        if (quantized) q = {w.format == Weight::Format::Int4 ? 4 : 8, w.scales.data, static_cast<const uint8_t*>(w.zeros.data),
                            w.format == Weight::Format::Int8 ? in : w.group_size, w.format == Weight::Format::Fp8};
        const k::QuantizedWeight* qp = quantized ? &q : nullptr;
        // The matrix cuBLASLt multiplies: the weight itself, or its codes expanded into scratch.
        auto matrix = [&]() -> const void* {
            if (!quantized) return w.values.data;
            const Tensor expanded = grown(dequantized_, n_out, in, "expanded weights");
            if (w.format == Weight::Format::Int4 && w.layout == kInt4Tiles) {
                k::dequantize_tiles(wt, {static_cast<const uint32_t*>(w.values.data), w.scales.data, static_cast<const uint8_t*>(w.zeros.data),
                                         w.group_size},
                                    n_out, in, expanded.data, s);
            } else {
                k::dequantize(wt, w.values.data, q, n_out, in, expanded.data, s);
            }
            return expanded.data;
        };
        // The product of many rows into `dst`: per-channel FP8 weights take cuBLASLt's FP8 product
        // over x quantized a row at a time; the rest, the weights (expanded where quantized) in
        // the compute type.
        auto product = [&](void* dst, k::DataType dst_type, bool accumulate = false) {
            if (w.format == Weight::Format::Fp8 && w.group_size == in && !accumulate && dst_type == wt && wt != k::DataType::F32 &&
                x.dtype == weight_type) {
                const Fp8Rows rows = fp8_scratch(x.rows, in);
                device_.uses({rows.codes});
                k::quantize_rows_fp8(wt, x.data, x.rows, in, rows.codes, rows.scales, s);
                if (gemm_->run_fp8(wt, rows.codes, rows.scales, x.rows, in, w.values.data, static_cast<const float*>(w.scales.data), n_out, bias,
                                   dst))
                    return;
            }
            gemm_->run(wt, x.data, x.rows, x.cols, matrix(), n_out, bias, dst, dst_type, accumulate);
        };
        const bool same_types = x.dtype == weight_type && (!bias || e.bias.dtype == weight_type);
        const bool tiled = w.format == Weight::Format::Int4 && w.layout == kInt4Tiles;
        const k::Int4Tiles tiles{static_cast<const uint32_t*>(w.values.data), w.scales.data, static_cast<const uint8_t*>(w.zeros.data), w.group_size};
        // Products of few rows: the GEMV, or for tiled 4-bit weights the tensor-core kernel (up to 64 rows).
        auto few_rows = [&](int64_t out_features, k::DataType out_type, k::GemvOptions o) {
            if (tiled) return k::w4a16(wt, x.data, x.rows, x.cols, tiles, out_features, out.data, out_type, o, s);
            o.quantized = qp;
            return k::gemv(wt, x.data, x.rows, x.cols, w.values.data, out_features, out.data, out_type, o, s);
        };
        switch (e.kind) {
        case Epilogue::Kind::None:
            if (few_rows(n_out, kernel_type(out.dtype), {.bias = bias})) return;
            if (bias && e.bias.dtype != out.dtype) throw Error("CUDA backend: a bias must have its output's type");
            product(out.data, kernel_type(out.dtype));
            return;
        case Epilogue::Kind::SiluMul:
            if (same_types && out.dtype == weight_type && few_rows(out.cols, kernel_type(out.dtype), {.bias = bias, .silu_gate = true})) return;
            {
                const Tensor scratch = product_scratch(e, x.rows, n_out);
                product(scratch.data, kernel_type(scratch.dtype));
                k::silu_mul(kernel_type(out.dtype), scratch.data, out.rows, out.cols, out.data, s);
            }
            return;
        case Epilogue::Kind::RopeStoreKv: {
            if (same_types && out.dtype == weight_type && kv_ && kv_shape_.dtype == out.dtype) {
                const k::RopeStore store{e.heads.num_heads, e.heads.num_kv_heads, e.heads.head_dim, linear_factor_, batch_, kv_, e.layer,
                                         kv_layout()};
                if (few_rows(n_out, kernel_type(out.dtype), {.bias = bias, .rope = &store})) return;
            }
            if (bias && e.bias.dtype != out.dtype) throw Error("CUDA backend: a bias must have its output's type");
            product(out.data, kernel_type(out.dtype));
            k::rope_store_kv(kernel_type(out.dtype), out.data, e.heads.num_heads, e.heads.num_kv_heads, e.heads.head_dim, linear_factor_,
                             batch_, kv_, e.layer, kv_layout(), s);
            return;
        }
        case Epilogue::Kind::AddTo:
            // The product is added to the residual stream where it is made (unrounded).
            if (same_types && out.stride == out.cols) {
                if (few_rows(n_out, k::DataType::F32, {.bias = bias, .accumulate = true})) return;
                if (!bias && w.format != Weight::Format::Fp8) {
                    product(out.data, k::DataType::F32, true);
                    return;
                }
            }
            {
                const Tensor scratch = product_scratch(e, x.rows, n_out);
                product(scratch.data, kernel_type(scratch.dtype));
                k::add_residual(kernel_type(scratch.dtype), f32(out), scratch.data, scratch.rows, out.rows, out.cols, k::DataType::F32, nullptr,
                                s);
            }
            return;
        }
    }

    void attention(const Tensor& qkv, const AttentionShape& shape, int32_t layer, Tensor out) override {
        const OpScope op(*this, "attention", {qkv.data, out.data});
        k::attention(kernel_type(qkv.dtype), qkv.data, shape.num_heads, shape.num_kv_heads, shape.head_dim, batch_, kv_, layer, kv_layout(),
                     out.data, max_len_, partial_, kPartialFloats, device_.stream());
    }

    void gather_logit_rows(const Tensor& x, Tensor out) override {
        const OpScope op(*this, "gather", {x.data, out.data});
        k::gather_rows(f32(x), x.cols, batch_.logit_rows, batch_.num_logit_rows, f32(out), device_.stream());
    }

    void copy_kv_block(int32_t from, int32_t to) override {
        const auto bytes = std::size_t(kv_shape_.block_bytes());
        check(cudaMemcpyAsync(static_cast<std::byte*>(kv_) + std::size_t(to) * bytes, static_cast<std::byte*>(kv_) + std::size_t(from) * bytes,
                              bytes, cudaMemcpyDeviceToDevice, device_.stream()),
              "copying a KV block");
    }

    void argmax_rows(const Tensor& logits, std::span<int32_t> out) override {
        const OpScope op(*this, "argmax", {logits.data});
        // The ids, then the per-row keys (8-byte aligned after an even number of ids).
        const std::size_t id_bytes = (std::size_t(logits.rows) * 4 + 7) / 8 * 8;
        auto* d = static_cast<int32_t*>(device_.scratch(id_bytes + std::size_t(logits.rows) * 8));
        cudaStream_t s = device_.stream();
        k::argmax_rows(f32(logits), int32_t(logits.rows), logits.cols, d,
                       reinterpret_cast<unsigned long long*>(reinterpret_cast<std::byte*>(d) + id_bytes), s);
        check(cudaMemcpyAsync(out.data(), d, std::size_t(logits.rows) * 4, cudaMemcpyDeviceToHost, s), "reading ids");
        check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    }

    void sample_rows(const Tensor& logits, std::span<const SampleRow> rows, std::span<int32_t> out) override {
        const OpScope op(*this, "sample", {logits.data});
        if (int64_t(rows.size()) != logits.rows || out.size() != rows.size()) throw Error("CUDA backend: one sampling row per logits row");
        // Parameters, penalized ids and lowered logits go up in one copy; only the chosen ids come back.
        const std::size_t n = rows.size(), ids_offset = (n * 4 + 15) / 16 * 16, params_bytes = n * sizeof(k::SampleParams);
        std::size_t penalized = 0, lowered = 0;
        for (const auto& r : rows) penalized += r.penalized.size(), lowered += r.lowered.size();
        const std::size_t lowered_offset = params_bytes + penalized * 4;
        sample_host_.assign(lowered_offset + lowered * sizeof(k::LoweredLogit), std::byte{0});
        auto* params = reinterpret_cast<k::SampleParams*>(sample_host_.data());
        auto* ids = reinterpret_cast<int32_t*>(sample_host_.data() + params_bytes);
        auto* lowered_logits = reinterpret_cast<k::LoweredLogit*>(sample_host_.data() + lowered_offset);
        int32_t next = 0, next_lowered = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const SamplingParams& p = rows[i].params;
            params[i] = {p.temperature, p.top_p, p.min_p, p.repetition_penalty, p.top_k, next, int32_t(rows[i].penalized.size()),
                         next_lowered, int32_t(rows[i].lowered.size()), rows[i].u};
            std::copy(rows[i].penalized.begin(), rows[i].penalized.end(), ids + next);
            next += int32_t(rows[i].penalized.size());
            for (const LoweredLogit& t : rows[i].lowered) lowered_logits[next_lowered++] = {t.id, t.by};
        }
        cudaStream_t s = device_.stream();
        auto* device = static_cast<std::byte*>(device_.scratch(ids_offset + sample_host_.size()));
        check(cudaMemcpyAsync(device + ids_offset, sample_host_.data(), sample_host_.size(), cudaMemcpyHostToDevice, s),
              "copying sampling parameters");
        k::sample_rows(f32(logits), int32_t(n), logits.cols, reinterpret_cast<const k::SampleParams*>(device + ids_offset),
                       reinterpret_cast<const int32_t*>(device + ids_offset + params_bytes),
                       reinterpret_cast<const k::LoweredLogit*>(device + ids_offset + lowered_offset), reinterpret_cast<int32_t*>(device), s);
        check(cudaMemcpyAsync(out.data(), device, n * 4, cudaMemcpyDeviceToHost, s), "reading ids");
        check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    }

    // --- Ops of the vision encoders and projectors.
    void layer_norm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor out) override {
        const OpScope op(*this, "layer_norm", {x.data, weight.data, bias ? bias->data : nullptr, out.data});
        k::norm_rows(kernel_type(x.dtype), x.data, x.stride, kernel_type(out.dtype), out.data, out.stride, kernel_type(weight.dtype),
                     weight.data, bias ? bias->data : nullptr, eps, false, x.rows, x.cols, device_.stream());
    }

    void add_norm(Tensor x, const Tensor& delta, const Tensor* column_scale, const Tensor& weight, const Tensor* bias, float eps, bool rms,
                  Tensor out) override {
        const DType t = delta.dtype;
        const bool fused = x.dtype == DType::F32 && x.stride == x.cols && delta.stride == delta.cols && out.stride == out.cols &&
                           delta.rows == x.rows && delta.cols == x.cols && out.rows == x.rows && out.cols == x.cols && out.dtype == t &&
                           weight.dtype == t && (!bias || bias->dtype == t) && (!column_scale || column_scale->dtype == t);
        if (fused) {
            const OpScope op(*this, "add + norm",
                             {x.data, delta.data, column_scale ? column_scale->data : nullptr, weight.data, bias ? bias->data : nullptr, out.data});
            if (k::add_norm_rows(kernel_type(t), f32(x), delta.data, column_scale ? column_scale->data : nullptr, weight.data,
                                 bias && !rms ? bias->data : nullptr, eps, rms, x.rows, x.cols, out.data, device_.stream()))
                return;
        }
        Backend::add_norm(x, delta, column_scale, weight, bias, eps, rms, out);
    }

    void patch_rows(const Tensor& planes, const Tensor& levels, int64_t patch, Tensor out) override {
        const OpScope op(*this, "patch_rows", {planes.data, levels.data, out.data});
        check_patch_rows(planes, levels, patch, out, "CUDA backend");
        if (levels.dtype != out.dtype || levels.stride != levels.cols || out.stride != out.cols || out.cols % 2 != 0)
            throw Error("CUDA backend: patch_rows wants contiguous levels and rows of one type, an even number of columns");
        k::patch_rows(kernel_type(out.dtype), planes.data, levels.data, levels.rows, planes.cols, patch, out.rows, out.cols, out.data,
                      device_.stream());
    }

    void activate(Tensor x, Activation kind) override {
        const OpScope op(*this, "activate", {x.data});
        k::activate(kernel_type(x.dtype), x.data, x.rows, x.cols, x.stride, kind == Activation::Gelu ? k::Activation::Gelu : k::Activation::QuickGelu,
                    device_.stream());
    }

    void attention_full(const Tensor& qkv, int32_t heads, int32_t head_dim, int64_t group_rows, Tensor out) override {
        const OpScope op(*this, "attention_full", {qkv.data, out.data});
        if (qkv.dtype != out.dtype || qkv.stride != qkv.cols || out.stride != out.cols)
            throw Error("CUDA backend: attention_full wants contiguous tensors of one type");
        k::attention_full(kernel_type(qkv.dtype), qkv.data, heads, head_dim, qkv.rows, group_rows, out.data, device_.stream());
    }

    void gather_rows(const Tensor& src, const Tensor& index, Tensor out) override {
        const OpScope op(*this, "gather_rows", {src.data, index.data, out.data});
        if (index.dtype != DType::I32 || out.stride != out.cols || index.cols * src.cols != out.rows * out.cols)
            throw Error("CUDA backend: gather_rows output has the wrong size");
        k::convert_rows(kernel_type(src.dtype), src.data, src.stride, kernel_type(out.dtype), out.data, src.cols, index.cols, src.cols,
                        static_cast<const int32_t*>(index.data), device_.stream());
    }

    void copy(const Tensor& src, Tensor dst) override {
        const OpScope op(*this, "copy", {src.data, dst.data});
        if (src.rows != dst.rows || src.cols != dst.cols) throw Error("CUDA backend: copy shapes differ");
        k::convert_rows(kernel_type(src.dtype), src.data, src.stride, kernel_type(dst.dtype), dst.data, dst.stride, src.rows, src.cols, nullptr,
                        device_.stream());
    }

    // Recorded the second time (owner, key) comes, replayed after; not while profiling.
    void run_recorded(const void* owner, int64_t key, const std::function<void()>& ops) override {
        if (profiling_) {
            ops();
            return;
        }
        device_.run_recorded(RecordingKey{owner, key}, true, {}, ops);
    }

protected:
    void free(const Tensor& t) noexcept override { device_.free(t.data); }

private:
    static constexpr int64_t kPartialFloats = int64_t(4) << 20;  // split-attention partial results
    static constexpr std::size_t kGemmWorkspace = std::size_t(32) << 20;
    static constexpr int32_t kGraphMaxTokens = 64;
    static constexpr int32_t kInt4Tiles = 1;  // Weight::layout of 4-bit codes re-laid for kernels/w4a16.cu

    Buffer own(void* p, DType dtype, int64_t rows, int64_t cols) { return Buffer(*this, Tensor{p, dtype, rows, cols, cols}); }

    // Scratch that lasts (recordings may use it): made larger when a product needs more, outside a
    // recording (the first forward of each shape runs unrecorded, so recordings find it grown).
    Tensor grown(Buffer& b, int64_t rows, int64_t cols, const char* what) {
        if (b.empty() || b.tensor().rows * b.tensor().cols < rows * cols) {
            if (device_.recording()) throw Error(std::string("CUDA backend: ") + what + " outgrew their scratch while recording");
            b.reset();
            b = activation(rows, cols, compute_);
        }
        return Tensor{b.tensor().data, compute_, rows, cols, cols};
    }

    // x quantized to FP8 for cuBLASLt: the codes, then (256-byte aligned) one scale per row.
    struct Fp8Rows {
        uint8_t* codes;
        float* scales;
    };
    Fp8Rows fp8_scratch(int64_t rows, int64_t cols) {
        const int64_t code_bytes = (rows * cols + 255) / 256 * 256, bytes = code_bytes + rows * 4;
        const int64_t elements = (bytes + int64_t(dtype_size(compute_)) - 1) / int64_t(dtype_size(compute_));
        auto* base = static_cast<uint8_t*>(grown(fp8_activations_, 1, elements, "FP8 activations").data);
        return {base, reinterpret_cast<float*>(base + code_bytes)};
    }

    // Where a product goes before a separate epilogue kernel: the epilogue's scratch, else device scratch.
    Tensor product_scratch(const Epilogue& e, int64_t rows, int64_t cols) {
        if (!e.scratch.empty()) return e.scratch.rows_view(0, rows);
        const std::size_t bytes = std::size_t(rows * cols) * dtype_size(compute_);
        if (device_.recording()) throw Error("CUDA backend: a recorded product needs its epilogue's scratch");
        return Tensor{device_.scratch(bytes), compute_, rows, cols, cols};
    }

    // Each op: the memory it touches (for recordings) and, with LUMEN_PROFILE=1, its GPU time,
    // printed when the backend closes.
    struct OpScope {
        CudaBackend& b;
        const char* op;
        cudaEvent_t start = nullptr;
        OpScope(CudaBackend& backend, const char* name, std::initializer_list<const void*> touched) : b(backend), op(name) {
            b.device_.uses(touched);
            if (!b.profiling_) return;
            cudaEventCreate(&start);
            cudaEventRecord(start, b.device_.stream());
        }
        ~OpScope() {
            if (!b.profiling_) return;
            cudaEvent_t stop;
            cudaEventCreate(&stop);
            cudaEventRecord(stop, b.device_.stream());
            b.pending_.push_back({op, start, stop});
        }
        OpScope(const OpScope&) = delete;
        OpScope& operator=(const OpScope&) = delete;
    };
    struct PendingTiming {
        const char* op;
        cudaEvent_t start, stop;
    };
    // A lasting C string for a profile label.
    const char* label(std::string text) { return labels_.insert(std::move(text)).first->c_str(); }
    // Profiles tell the matrices apart.
    const char* product_label(Epilogue::Kind kind, const Tensor& x, int64_t out_features, int64_t in_features) {
        if (!profiling_) return "linear";
        const char* fused = kind == Epilogue::Kind::SiluMul ? "SiLU + " : kind == Epilogue::Kind::RopeStoreKv ? "RoPE + "
                            : kind == Epilogue::Kind::AddTo                                                  ? "+= "
                                                                                                             : "";
        return label(std::string(x.rows <= 8 ? "GEMV " : "GEMM ") + fused + std::to_string(in_features) + "->" + std::to_string(out_features));
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

    k::KvLayout kv_layout() const {
        return k::KvLayout{kv_shape_.num_layers, kv_shape_.num_kv_heads, kv_shape_.block_size, kv_shape_.head_dim, kv_shape_.bits};
    }

    CudaDevice device_;  // first: everything below lives on it
    void* gemm_workspace_;
    std::unique_ptr<k::Gemm> gemm_;
    bool profiling_;
    DType compute_ = DType::BF16;
    void* kv_ = nullptr;
    KvCacheShape kv_shape_;
    PinnedBuffer batch_host_;
    Event batch_done_;
    void* batch_device_ = nullptr;
    std::size_t batch_device_bytes_ = 0;
    k::Batch batch_;
    RecordingKey forward_key_;
    std::vector<PendingTiming> pending_;
    std::map<std::string, std::pair<double, int>> profile_;
    std::vector<int32_t> query_tiles_;
    std::set<std::string> labels_;
    std::vector<std::byte> sample_host_;
    float linear_factor_ = 1.0f;
    int32_t max_len_ = 0;
    float* partial_ = nullptr;
    Buffer dequantized_, reordered_, fp8_activations_;  // see grown()
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

}  // namespace lumen
