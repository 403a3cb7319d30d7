// The CPU reference backend: fp32 math over F32, F16 or BF16 weights, threads over rows, weights
// converted a few rows at a time so each converted row serves every token of the batch.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>

#include "engine/backend/backend.h"
#include "engine/backend/cpu_math.h"
#include "engine/backend/kv_quant.h"
#include "engine/util/error.h"
#include "engine/util/thread_pool.h"

namespace lumen {

namespace {

using namespace cpu;

uint64_t meminfo(const std::string& field, uint64_t fallback) {
    std::ifstream f("/proc/meminfo");
    std::string key, unit;
    uint64_t kb = 0;
    while (f >> key >> kb >> unit)
        if (key == field) return kb * 1024;
    return fallback;
}

class CpuBackend final : public Backend {
public:
    std::string name() const override { return "cpu"; }

    // Weights are used where they are (mapped files): the Buffer owns nothing.
    Buffer weight(const void* host, DType dtype, int64_t rows, int64_t cols) override {
        if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::I32 && dtype != DType::I8 &&
            dtype != DType::U8 && dtype != DType::F8_E4M3)
            throw Error("CPU backend: weights of type " + std::string(dtype_name(dtype)) + " are not supported");
        return Buffer(*this, Tensor{const_cast<void*>(host), dtype, rows, cols, cols});
    }

    bool weights_stay_on_host() const override { return true; }
    DType compute_dtype() const override { return DType::F32; }

    // MemAvailable: what the system can give without swapping.
    uint64_t free_memory() override { return meminfo("MemAvailable:", uint64_t(4) << 30); }
    DeviceInfo device() override {
        return {"cpu", std::to_string(ThreadPool::shared().size()) + " threads", 0, 0, meminfo("MemTotal:", 0), free_memory()};
    }

    Buffer random_weight(DType dtype, int64_t rows, int64_t cols, uint64_t seed, float center, float scale) override {
        const std::size_t n = std::size_t(rows * cols), elem = dtype_size(dtype);
        auto buffer = std::make_unique<std::byte[]>(std::max<std::size_t>(1, n * elem));
        std::byte* data = buffer.get();
        ThreadPool::shared().parallel_for(n, 1 << 16, [&](std::size_t b, std::size_t e) {
            for (std::size_t i = b; i < e; ++i) {
                if (dtype == DType::I32 || dtype == DType::I8 || dtype == DType::U8 || dtype == DType::F8_E4M3) {  // codes: uniform bits
                    // FP8 codes below 2 in magnitude (bit 6 clear): no NaN, a weight-like spread.
                    const uint64_t bits = random_bits(seed, i) & (dtype == DType::F8_E4M3 ? 0xBFu : ~uint64_t(0));
                    std::memcpy(data + i * elem, &bits, elem);
                    continue;
                }
                const float v = center + scale * (random_unit(seed, i) - 0.5f);
                if (dtype == DType::F32) std::memcpy(data + i * 4, &v, 4);
                else {
                    const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
                    std::memcpy(data + i * 2, &h, 2);
                }
            }
        });
        return owned(std::move(buffer), Tensor{data, dtype, rows, cols, cols});
    }

    Buffer activation(int64_t rows, int64_t cols, DType dtype) override {
        if (dtype != DType::F32 && dtype != DType::U8 && dtype != DType::I32)
            throw Error("CPU backend: activations are F32 (or U8 image samples, I32 indices)");
        auto buffer = std::make_unique<std::byte[]>(std::size_t(std::max<int64_t>(1, rows * cols)) * dtype_size(dtype));
        const Tensor t{buffer.get(), dtype, rows, cols, cols};
        return owned(std::move(buffer), t);
    }

    double measure_read_bandwidth() override {
        // Sums 1 GiB in parallel, best of three.
        const std::size_t n = std::size_t(1) << 28;
        std::unique_ptr<float[]> buffer(new float[n]);
        ThreadPool::shared().parallel_for(n, 1 << 20, [&](std::size_t b, std::size_t e) { std::fill(buffer.get() + b, buffer.get() + e, 1.0f); });
        double best = 0;
        for (int rep = 0; rep < 3; ++rep) {
            std::mutex mutex;
            double total = 0;  // kept, so that the sums are not optimised away
            const auto start = std::chrono::steady_clock::now();
            ThreadPool::shared().parallel_for(n, 1 << 20, [&](std::size_t b, std::size_t e) {
                const float part = sum(buffer.get() + b, int64_t(e - b));
                std::lock_guard lock(mutex);
                total += part;
            });
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            best = std::max(best, double(n * sizeof(float)) / s);
        }
        return best;
    }

    void sample_rows(const Tensor& logits, std::span<const SampleRow> rows, std::span<int32_t> out) override {
        check_f32(logits, "logits");
        if (int64_t(rows.size()) != logits.rows || out.size() != rows.size()) throw Error("CPU backend: one sampling row per logits row");
        ThreadPool::shared().parallel_for(rows.size(), 1, [&](std::size_t begin, std::size_t end) {
            for (std::size_t r = begin; r < end; ++r)
                out[r] = sample_logits(std::span<float>(frow(logits, int64_t(r)), std::size_t(logits.cols)), rows[r].params,
                                       rows[r].penalized, rows[r].lowered, rows[r].u);
        });
    }

    void argmax_rows(const Tensor& logits, std::span<int32_t> out) override {
        for (int64_t r = 0; r < logits.rows; ++r) {
            const float* row = frow(logits, r);
            out[std::size_t(r)] = int32_t(std::max_element(row, row + logits.cols) - row);
        }
    }

    void allocate_kv_cache(const KvCacheShape& shape) override {
        if (shape.dtype != DType::F32) throw Error("CPU backend: the KV cache is fp32");
        check_kv_cache_shape(shape, "CPU backend");
        kv_shape_ = shape;
        // Left uninitialised: attention reads only slots it wrote, and untouched pages cost nothing.
        kv_.reset(new std::byte[std::size_t(shape.block_bytes()) * std::size_t(shape.num_blocks)]);
    }
    const KvCacheShape& kv_cache_shape() const override { return kv_shape_; }

    void read(const Tensor& t, std::span<float> out) override {
        if (out.size() < std::size_t(t.rows * t.cols)) throw Error("CPU backend: read buffer too small");
        std::vector<float> scratch(std::size_t(t.cols));
        for (int64_t r = 0; r < t.rows; ++r) {
            const float* row = row_f32(t, r, scratch.data());
            std::copy(row, row + t.cols, out.begin() + r * t.cols);
        }
    }

    void write(Tensor t, std::span<const float> values) override {
        check_f32(t, "write target");
        for (int64_t r = 0; r < t.rows; ++r) std::copy_n(values.begin() + r * t.cols, t.cols, frow(t, r));
    }

    void write_u8(Tensor t, std::span<const uint8_t> values) override {
        if (t.dtype != DType::U8 || t.stride != t.cols) throw Error("CPU backend: write_u8 wants a contiguous U8 tensor");
        if (values.size() < std::size_t(t.rows * t.cols)) throw Error("CPU backend: write source too small");
        std::memcpy(t.data, values.data(), std::size_t(t.rows * t.cols));
    }

    // Token ids are checked against the vocabulary once, by the model, before the batch is made.
    void embed(const Tensor& table, Tensor out) override {
        check_f32(out, "embedding output");
        const BatchLayout& batch = this->batch();
        for (int64_t t = 0; t < batch.num_tokens(); ++t) {
            const int32_t id = batch.token_ids[std::size_t(t)];  // in range: the model checked the batch
            float* dst = frow(out, t);
            const float* src = row_f32(table, id, dst);
            if (src != dst) std::copy(src, src + table.cols, dst);
        }
    }

    void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
        check_f32(x, "rms_norm input");
        std::vector<float> w(std::size_t(weight.cols));
        const float* wp = row_f32(weight, 0, w.data());
        ThreadPool::shared().parallel_for(std::size_t(x.rows), grain_for(std::size_t(x.cols)), [&](std::size_t b, std::size_t e) {
            for (std::size_t r = b; r < e; ++r) normalize_row(frow(x, int64_t(r)), wp, x.cols, eps, frow(out, int64_t(r)));
        });
    }

    void add(Tensor x, const Tensor& delta, const Tensor* column_scale) override {
        if (delta.cols != x.cols || delta.rows == 0 || x.rows % delta.rows != 0) throw Error("CPU backend: add shapes do not match");
        std::vector<float> scratch(std::size_t(delta.cols)), s(column_scale ? std::size_t(column_scale->cols) : 0);
        const float* sp = column_scale ? row_f32(*column_scale, 0, s.data()) : nullptr;
        for (int64_t r = 0; r < x.rows; ++r) {
            float* a = frow(x, r);
            const float* d = row_f32(delta, r % delta.rows, scratch.data());  // a weight (position embeddings) may be 16-bit
            if (sp)
                for (int64_t i = 0; i < x.cols; ++i) a[i] += d[i] * sp[i];
            else
                for (int64_t i = 0; i < x.cols; ++i) a[i] += d[i];
        }
    }

    // The one entry point of the products: the product in fp32, then its epilogue as a pass of its
    // own (the reference: each step exactly as the separate operation computes it).
    void linear(const Tensor& x, const Weight& w, const Epilogue& e, Tensor out) override {
        check_f32(x, "linear input");
        check_linear(x, w, e, out, "CPU backend");
        switch (e.kind) {
        case Epilogue::Kind::None: matmul(x, w, e.bias, out); return;
        case Epilogue::Kind::RopeStoreKv:
            matmul(x, w, e.bias, out);
            rope_store_kv(out, e.heads, e.layer);
            return;
        case Epilogue::Kind::SiluMul:
        case Epilogue::Kind::AddTo: {
            std::unique_ptr<float[]> own;
            Tensor product = e.scratch.empty() ? Tensor{} : e.scratch.rows_view(0, x.rows);
            if (product.empty()) {
                const int64_t n = w.out_features();
                own.reset(new float[std::size_t(x.rows * n)]);
                product = Tensor{own.get(), DType::F32, x.rows, n, n};
            }
            matmul(x, w, e.bias, product);
            if (e.kind == Epilogue::Kind::SiluMul) silu_mul(product, out);
            else add(out, product, nullptr);
            return;
        }
        }
    }

    void attention(const Tensor& qkv, const AttentionShape& shape, int32_t layer, Tensor out) override {
        const BatchLayout& batch = this->batch();
        const int32_t D = shape.head_dim, H = shape.num_heads;
        const int32_t group = H / shape.num_kv_heads;
        const float scale = 1.0f / std::sqrt(float(D));
        const auto& kv = kv_shape_;
        const std::size_t pairs = std::size_t(batch.num_tokens()) * std::size_t(H);
        ThreadPool::shared().parallel_for(pairs, grain_for(std::size_t(D) * 64), [&](std::size_t b, std::size_t e) {
            std::vector<float> scores, row(static_cast<std::size_t>(D));
            for (std::size_t pair = b; pair < e; ++pair) {
                const int64_t t = int64_t(pair) / H;
                const int32_t h = int32_t(pair % std::size_t(H));
                const int32_t kvh = h / group;
                const int32_t seq = batch.token_seq[std::size_t(t)];
                const int32_t len = batch.positions[std::size_t(t)] + 1;  // causal: positions 0..p
                const int32_t* table = batch.block_tables.data() + std::size_t(seq) * std::size_t(batch.max_blocks);
                const float* q = frow(qkv, t) + int64_t(h) * D;
                scores.resize(std::size_t(len));
                float max_score = -INFINITY;
                for (int32_t p = 0; p < len; ++p) {
                    const float s = dot(q, kv_row(table[p / kv.block_size], layer, 0, kvh, p % kv.block_size, row.data()), D) * scale;
                    scores[std::size_t(p)] = s;
                    max_score = std::max(max_score, s);
                }
                float sum = 0;
                for (auto& s : scores) sum += (s = std::exp(s - max_score));
                float* o = frow(out, t) + int64_t(h) * D;
                std::fill(o, o + D, 0.0f);
                const float inv = 1.0f / sum;
                for (int32_t p = 0; p < len; ++p)
                    axpy(scores[std::size_t(p)] * inv, kv_row(table[p / kv.block_size], layer, 1, kvh, p % kv.block_size, row.data()), o, D);
            }
        });
    }

    void begin_batch(const BatchLayout& batch, const RopeConfig& rope) override {
        batch_ = &batch;
        rope_ = rope;
    }

    void layer_norm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor out) override {
        check_f32(x, "layer_norm input");
        std::vector<float> w(std::size_t(weight.cols)), b(std::size_t(weight.cols), 0.0f);
        const float* wp = row_f32(weight, 0, w.data());
        const float* bp = bias ? row_f32(*bias, 0, b.data()) : b.data();
        ThreadPool::shared().parallel_for(std::size_t(x.rows), grain_for(std::size_t(x.cols)), [&](std::size_t rb, std::size_t re) {
            for (std::size_t r = rb; r < re; ++r) {
                const float* in = frow(x, int64_t(r));
                float* o = frow(out, int64_t(r));
                // Two passes, as torch computes it: the mean, then the variance around it.
                double mean = 0;
                for (int64_t i = 0; i < x.cols; ++i) mean += in[i];
                mean /= double(x.cols);
                double var = 0;
                for (int64_t i = 0; i < x.cols; ++i) var += (in[i] - mean) * (in[i] - mean);
                var /= double(x.cols);
                const float m = float(mean), inv = float(1.0 / std::sqrt(var + double(eps)));
                for (int64_t i = 0; i < x.cols; ++i) o[i] = (in[i] - m) * inv * wp[i] + bp[i];
            }
        });
    }

    void activate(Tensor x, Activation kind) override {
        check_f32(x, "activation input");
        ThreadPool::shared().parallel_for(std::size_t(x.rows), grain_for(std::size_t(x.cols) * 8), [&](std::size_t rb, std::size_t re) {
            for (std::size_t r = rb; r < re; ++r) {
                float* v = frow(x, int64_t(r));
                if (kind == Activation::Gelu)
                    for (int64_t i = 0; i < x.cols; ++i) v[i] = 0.5f * v[i] * (1.0f + std::erf(v[i] * 0.70710678118654752f));
                else
                    for (int64_t i = 0; i < x.cols; ++i) v[i] = v[i] / (1.0f + std::exp(-1.702f * v[i]));
            }
        });
    }

    void patch_rows(const Tensor& planes, const Tensor& levels, int64_t patch, Tensor out) override {
        check_f32(out, "patch rows");
        check_patch_rows(planes, levels, patch, out, "CPU backend");
        const int64_t size = planes.cols, channels = levels.rows, g = size / patch, n = g * g, values = channels * patch * patch;
        const auto* samples = static_cast<const uint8_t*>(planes.data);
        std::vector<float> level_values(std::size_t(channels * 256)), scratch(256);
        for (int64_t c = 0; c < channels; ++c) std::copy_n(row_f32(levels, c, scratch.data()), 256, level_values.begin() + c * 256);
        ThreadPool::shared().parallel_for(std::size_t(out.rows), grain_for(std::size_t(out.cols)), [&](std::size_t rb, std::size_t re) {
            for (std::size_t r = rb; r < re; ++r) {
                const int64_t t = int64_t(r) / n, y = int64_t(r) % n / g, x = int64_t(r) % g;
                float* dst = frow(out, int64_t(r));
                for (int64_t c = 0; c < channels; ++c) {
                    const float* level = level_values.data() + c * 256;
                    for (int64_t ky = 0; ky < patch; ++ky) {
                        const uint8_t* src = samples + ((t * channels + c) * size + y * patch + ky) * size + x * patch;
                        for (int64_t kx = 0; kx < patch; ++kx) dst[(c * patch + ky) * patch + kx] = level[src[kx]];
                    }
                }
                std::fill(dst + values, dst + out.cols, 0.0f);
            }
        });
    }

    void attention_full(const Tensor& qkv, int32_t heads, int32_t head_dim, int64_t group_rows, Tensor out) override {
        check_f32(qkv, "attention input");
        if (group_rows <= 0 || qkv.rows % group_rows != 0) throw Error("CPU backend: attention groups do not tile the rows");
        const int64_t width = int64_t(heads) * head_dim;
        const float scale = 1.0f / std::sqrt(float(head_dim));
        const std::size_t pairs = std::size_t(qkv.rows) * std::size_t(heads);
        ThreadPool::shared().parallel_for(pairs, grain_for(std::size_t(group_rows * head_dim * 2)), [&](std::size_t b, std::size_t e) {
            std::vector<float> scores(static_cast<std::size_t>(group_rows));
            for (std::size_t pair = b; pair < e; ++pair) {
                const int64_t t = int64_t(pair) / heads;
                const int64_t h = int64_t(pair) % heads;
                const int64_t first = t / group_rows * group_rows;
                const float* q = frow(qkv, t) + h * head_dim;
                float max_score = -INFINITY;
                for (int64_t j = 0; j < group_rows; ++j) {
                    const float sc = dot(q, frow(qkv, first + j) + width + h * head_dim, head_dim) * scale;
                    scores[std::size_t(j)] = sc;
                    max_score = std::max(max_score, sc);
                }
                float sum = 0;
                for (auto& sc : scores) sum += (sc = std::exp(sc - max_score));
                float* o = frow(out, t) + h * head_dim;
                std::fill(o, o + head_dim, 0.0f);
                const float inv = 1.0f / sum;
                for (int64_t j = 0; j < group_rows; ++j)
                    axpy(scores[std::size_t(j)] * inv, frow(qkv, first + j) + 2 * width + h * head_dim, o, head_dim);
            }
        });
    }

    Buffer indices(std::span<const int32_t> values, int64_t rows) override {
        check_row_indices(values, rows, "CPU backend");
        auto buffer = std::make_unique<std::byte[]>(std::max<std::size_t>(1, values.size()) * 4);
        std::memcpy(buffer.get(), values.data(), values.size() * 4);
        const Tensor t{buffer.get(), DType::I32, 1, int64_t(values.size()), int64_t(values.size())};
        return owned(std::move(buffer), t);
    }

    void gather_rows(const Tensor& src, const Tensor& index, Tensor out) override {
        check_f32(out, "gather output");
        if (index.dtype != DType::I32 || out.stride != out.cols || index.cols * src.cols != out.rows * out.cols)
            throw Error("CPU backend: gather_rows output has the wrong size");
        const auto* rows = static_cast<const int32_t*>(index.data);
        float* dst = static_cast<float*>(out.data);
        for (int64_t i = 0; i < index.cols; ++i) {
            const float* row = row_f32(src, rows[i], dst + i * src.cols);
            if (row != dst + i * src.cols) std::copy_n(row, src.cols, dst + i * src.cols);
        }
    }

    void copy(const Tensor& src, Tensor dst) override {
        check_f32(dst, "copy target");
        if (src.rows != dst.rows || src.cols != dst.cols) throw Error("CPU backend: copy shapes differ");
        for (int64_t r = 0; r < src.rows; ++r) {
            const float* row = row_f32(src, r, frow(dst, r));
            if (row != frow(dst, r)) std::copy_n(row, src.cols, frow(dst, r));
        }
    }

    void gather_logit_rows(const Tensor& x, Tensor out) override {
        const auto& rows = batch().logit_rows;
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const float* src = frow(x, rows[i]);
            std::copy(src, src + x.cols, frow(out, int64_t(i)));
        }
    }

    void copy_kv_block(int32_t from, int32_t to) override {
        const auto n = std::size_t(kv_shape_.block_bytes());
        std::copy_n(kv_.get() + std::size_t(from) * n, n, kv_.get() + std::size_t(to) * n);
    }

private:
    Buffer owned(std::unique_ptr<std::byte[]> memory, const Tensor& t) {
        buffers_.emplace(t.data, std::move(memory));
        return Buffer(*this, t);
    }
    void free(const Tensor& t) noexcept override { buffers_.erase(t.data); }

    const BatchLayout& batch() const {
        if (!batch_) throw Error("CPU backend: an op of the forward ran before begin_batch");
        return *batch_;
    }

    // Rotates q and k of each token of the batch and stores its k and v in the cache of `layer`.
    void rope_store_kv(Tensor qkv, const AttentionShape& shape, int32_t layer) {
        const BatchLayout& batch = this->batch();
        const RopeConfig& rope = rope_;
        const int32_t D = shape.head_dim, half = D / 2;
        const auto& kv = kv_shape_;
        std::vector<float> inv_freq(static_cast<std::size_t>(half));
        double cached_base = -1;
        std::vector<float> cos_v(static_cast<std::size_t>(half)), sin_v(static_cast<std::size_t>(half));
        for (int64_t t = 0; t < batch.num_tokens(); ++t) {
            const double base = rope_base(rope, batch.rope_lengths[std::size_t(t)]);
            if (base != cached_base) {
                // As transformers computes it, in fp32: 1 / base^(2i/d), divided by the linear factor.
                for (int32_t i = 0; i < half; ++i) {
                    float f = 1.0f / std::pow(float(base), float(2 * i) / float(D));
                    if (rope.scaling.type == RopeScaling::Type::Linear) f = f / float(rope.scaling.factor);
                    inv_freq[std::size_t(i)] = f;
                }
                cached_base = base;
            }
            const float pos = float(batch.positions[std::size_t(t)]);
            for (int32_t i = 0; i < half; ++i) {
                const float angle = pos * inv_freq[std::size_t(i)];
                cos_v[std::size_t(i)] = std::cos(angle);
                sin_v[std::size_t(i)] = std::sin(angle);
            }
            float* row = frow(qkv, t);
            auto rotate = [&](float* h) {
                for (int32_t i = 0; i < half; ++i) {
                    const float a = h[i], b = h[i + half];
                    h[i] = a * cos_v[std::size_t(i)] - b * sin_v[std::size_t(i)];
                    h[i + half] = b * cos_v[std::size_t(i)] + a * sin_v[std::size_t(i)];
                }
            };
            for (int32_t h = 0; h < shape.num_heads + shape.num_kv_heads; ++h) rotate(row + int64_t(h) * D);

            const int32_t seq = batch.token_seq[std::size_t(t)];
            const int32_t p = batch.positions[std::size_t(t)];
            const int32_t block = batch.block_tables[std::size_t(seq) * std::size_t(batch.max_blocks) + std::size_t(p / kv.block_size)];
            const int32_t slot = p % kv.block_size;
            const float* k = row + int64_t(shape.num_heads) * D;
            const float* v = k + int64_t(shape.num_kv_heads) * D;
            for (int32_t h = 0; h < shape.num_kv_heads; ++h) {
                store_kv_row(k + int64_t(h) * D, block, layer, 0, h, slot);
                store_kv_row(v + int64_t(h) * D, block, layer, 1, h, slot);
            }
        }
    }

    void silu_mul(const Tensor& gate_up, Tensor out) {
        const int64_t I = out.cols;
        for (int64_t r = 0; r < out.rows; ++r) {
            const float* g = frow(gate_up, r);
            const float* u = g + I;
            float* o = frow(out, r);
            for (int64_t i = 0; i < I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        }
    }

    // The (layer, k|v, head) part of a block, and the slot's row in it: fp32 values, or codes
    // followed by the part's (scale, zero) pairs.
    std::byte* kv_part(int32_t block, int32_t layer, int32_t which, int32_t head) {
        const auto& s = kv_shape_;
        return kv_.get() + (((int64_t(block) * s.num_layers + layer) * 2 + which) * s.num_kv_heads + head) * s.head_bytes();
    }
    void store_kv_row(const float* x, int32_t block, int32_t layer, int32_t which, int32_t head, int32_t slot) {
        const auto& s = kv_shape_;
        std::byte* part = kv_part(block, layer, which, head);
        if (s.bits == 0) {
            std::memcpy(part + slot * s.row_bytes(), x, std::size_t(s.row_bytes()));
            return;
        }
        quantize_kv_row(x, s.head_dim, s.bits, reinterpret_cast<uint8_t*>(part + slot * s.row_bytes()),
                        reinterpret_cast<uint16_t*>(part + s.block_size * s.row_bytes()) + 2 * slot);
    }
    // A cached row as fp32: in place, or dequantized into `scratch` (head_dim floats).
    const float* kv_row(int32_t block, int32_t layer, int32_t which, int32_t head, int32_t slot, float* scratch) {
        const auto& s = kv_shape_;
        std::byte* part = kv_part(block, layer, which, head);
        if (s.bits == 0) return reinterpret_cast<const float*>(part + slot * s.row_bytes());
        dequantize_kv_row(reinterpret_cast<const uint8_t*>(part + slot * s.row_bytes()),
                          reinterpret_cast<const uint16_t*>(part + s.block_size * s.row_bytes()) + 2 * slot, s.head_dim, s.bits, scratch);
        return scratch;
    }

    std::map<void*, std::unique_ptr<std::byte[]>> buffers_;
    const BatchLayout* batch_ = nullptr;  // the forward's, from begin_batch until the next
    RopeConfig rope_;
    KvCacheShape kv_shape_;
    std::unique_ptr<std::byte[]> kv_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace lumen
