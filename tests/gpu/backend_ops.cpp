// The op table (after llama.cpp's test-backend-ops): every op and fused form of the Backend
// interface as rows of (op, shapes, types, weight format, epilogue), each run on the CPU reference
// and on the CUDA backend from the same inputs and compared by normalised mean squared error
// (ids exactly). A new format or epilogue is one more row.
//
//   backend_ops                  test mode (CTest test_backend_ops, label gpu; exit 77 without a GPU)
//   backend_ops --perf [FILTER]  performance mode: real shapes on the GPU, time per run with GB/s
//                                and TFLOP/s (docs/PERFORMANCE.md, "The op table")
//   backend_ops --list           the rows, without running them
// Over 600 lines: the file is the table, one row (or a loop of rows) after another.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "engine/backend/backend_factory.h"
#include "engine/backend/device.h"
#include "engine/util/dtype.h"
#include "engine/util/error.h"

using namespace lumen;

namespace {

constexpr int kSkip = 77;

const char* type_name(DType t) { return t == DType::BF16 ? "bf16" : t == DType::F16 ? "fp16" : "fp32"; }

// One row of the table set up on one backend: its inputs, the op, what it produced.
class OpRun {
public:
    OpRun(Backend& backend, DType dtype, uint64_t seed) : b(backend), dt(dtype), rng_(uint32_t(seed)) {}

    Backend& b;
    const DType dt;                     // the row's type: weights as stored, activations on the GPU
    std::function<void()> op;           // what is checked and timed
    std::function<void()> after;        // run once after op, before outputs are read (not timed)
    std::vector<Tensor> outputs;        // compared by NMSE
    std::vector<int32_t> ids;           // compared exactly
    BatchLayout batch;                  // kept alive while the backend's forward ops use it

    // Random values representable in the row's type, so that both backends start from the same numbers.
    std::vector<float> values(int64_t n, float scale) {
        std::uniform_real_distribution<float> u(-scale, scale);
        std::vector<float> v(static_cast<std::size_t>(n));
        for (auto& x : v) {
            x = u(rng_);
            if (dt == DType::BF16) x = bf16_to_f32(f32_to_bf16(x));
            if (dt == DType::F16) x = f16_to_f32(f32_to_f16(x));
        }
        return v;
    }
    // Activations of the compute type (fp32 on the CPU), random unless scale is 0.
    Tensor act(int64_t rows, int64_t cols, float scale = 0) { return filled(rows, cols, b.compute_dtype(), scale); }
    // fp32 tensors: the residual stream, logits.
    Tensor f32(int64_t rows, int64_t cols, float scale = 0) { return filled(rows, cols, DType::F32, scale); }
    Tensor weight(int64_t rows, int64_t cols, float scale, float center = 0) {
        auto v = values(rows * cols, scale);
        for (auto& x : v) x = round_to(x + center);
        auto& host = host_.emplace_back();
        if (dt == DType::F32) {
            host.resize(v.size() * 2);
            std::memcpy(host.data(), v.data(), v.size() * 4);
        } else {
            for (float x : v) host.push_back(dt == DType::BF16 ? f32_to_bf16(x) : f32_to_f16(x));
        }
        return keep(b.weight(host.data(), dt, rows, cols));
    }
    // A weight of random codes: 4-bit in groups (random zeros) or 8-bit per channel, scales
    // representable in the row's type; `reorder`: a random input order (GPTQ's act-order).
    // `fp8`: E4M3 codes (no NaNs) with fp32 scales per channel (group 0) or per group of inputs.
    Weight quantized(int64_t rows, int64_t cols, int bits, int32_t group, float scale, bool reorder = false, bool fp8 = false) {
        QuantizedParts parts;
        parts.format = fp8 ? Weight::Format::Fp8 : bits == 4 ? Weight::Format::Int4 : Weight::Format::Int8;
        parts.rows = rows, parts.cols = cols, parts.group_size = bits == 4 ? group : fp8 ? (group ? group : int32_t(cols)) : 0;
        const int64_t groups = bits == 4 ? cols / group : fp8 ? fp8_groups(cols, parts.group_size) : 1;
        auto& codes = bytes_.emplace_back(static_cast<std::size_t>(rows * cols * bits / 8));
        for (auto& c : codes) {
            c = uint8_t(rng_());
            if (fp8 && (c & 0x7F) == 0x7F) c = 0x38;
        }
        auto& scales = floats_.emplace_back(static_cast<std::size_t>(rows * groups));
        for (auto& v : scales) v = fp8 ? scale * (0.5f + float(rng_() % 1024) / 1024.0f) : round_to(scale * (0.5f + float(rng_() % 1024) / 1024.0f));
        parts.codes = codes.data();
        parts.scales = scales.data();
        if (bits == 4) {
            auto& zeros = bytes_.emplace_back(static_cast<std::size_t>(rows * groups));
            for (auto& z : zeros) z = uint8_t(rng_() % 16);
            parts.zeros = zeros.data();
        }
        if (reorder) {
            auto& order = orders_.emplace_back(static_cast<std::size_t>(cols));
            std::iota(order.begin(), order.end(), 0);
            std::shuffle(order.begin(), order.end(), rng_);
            parts.input_order = order.data();
        }
        Backend::OwnedWeight w = b.quantized_weight(parts);
        for (Buffer& buffer : w.buffers) buffers_.push_back(std::move(buffer));
        return w.weight;
    }
    Tensor u8(int64_t rows, int64_t cols) {
        const Tensor t = keep(b.activation(rows, cols, DType::U8));
        std::vector<uint8_t> v(static_cast<std::size_t>(rows * cols));
        for (auto& x : v) x = uint8_t(rng_());
        b.write_u8(t, v);
        return t;
    }
    Tensor indices(const std::vector<int32_t>& values, int64_t rows) { return keep(b.indices(values, rows)); }
    void begin(const BatchLayout& layout, const RopeConfig& rope) {
        batch = layout;
        b.begin_batch(batch, rope);
    }
    std::mt19937& rng() { return rng_; }

private:
    float round_to(float x) const {
        if (dt == DType::BF16) return bf16_to_f32(f32_to_bf16(x));
        if (dt == DType::F16) return f16_to_f32(f32_to_f16(x));
        return x;
    }
    Tensor filled(int64_t rows, int64_t cols, DType type, float scale) {
        const Tensor t = keep(b.activation(rows, cols, type));
        if (scale > 0) b.write(t, values(rows * cols, scale));
        return t;
    }
    Tensor keep(Buffer buffer) {
        buffers_.push_back(std::move(buffer));
        return buffers_.back();
    }
    std::mt19937 rng_;
    std::vector<Buffer> buffers_;
    std::vector<std::vector<uint16_t>> host_;
    std::vector<std::vector<uint8_t>> bytes_;
    std::vector<std::vector<float>> floats_;
    std::vector<std::vector<int32_t>> orders_;
};

struct OpCase {
    std::string name;
    DType dt = DType::BF16;
    double max_nmse = 0;  // per output tensor
    double bytes = 0;     // moved by one run of op (performance mode)
    double flops = 0;
    std::function<void(OpRun&)> setup;
};

double tolerance(DType t) { return t == DType::BF16 ? 1e-4 : t == DType::F16 ? 4e-6 : 1e-9; }

// Token `t` of sequence `s` for the layouts below: (first position, count) per sequence, and
// each sequence's KV blocks.
BatchLayout layout(const std::vector<std::pair<int32_t, int32_t>>& spans, const std::vector<std::vector<int32_t>>& tables) {
    BatchLayout b;
    for (const auto& t : tables) b.max_blocks = std::max(b.max_blocks, int32_t(t.size()));
    for (std::size_t s = 0; s < spans.size(); ++s) {
        for (int32_t k = 0; k < spans[s].second; ++k) {
            b.token_ids.push_back(int32_t((spans[s].first + k) * 31 % 997));
            b.positions.push_back(spans[s].first + k);
            b.token_seq.push_back(int32_t(s));
            b.rope_lengths.push_back(spans[s].first + spans[s].second);
        }
        std::vector<int32_t> row = tables[s];
        row.resize(std::size_t(b.max_blocks), 0);
        b.block_tables.insert(b.block_tables.end(), row.begin(), row.end());
    }
    return b;
}

// Attention over the paged cache: each sequence's positions before `spans` are stored first (a
// q/k/v product over them), then the rows of `spans`; the op is the attention of those rows, whose
// q/k/v it returns. `bits`: a cache of 8- or 4-bit codes, whose rows attention stores.
Tensor attention_setup(OpRun& r, int32_t head_dim, int32_t group, const std::vector<std::pair<int32_t, int32_t>>& spans,
                     const std::vector<std::vector<int32_t>>& tables, int32_t blocks, int32_t kv_heads = 2, int32_t bits = 0) {
    const AttentionShape heads{kv_heads * group, kv_heads, head_dim};
    const int64_t width = int64_t(heads.num_heads + 2 * kv_heads) * head_dim, hidden = 64;
    const RopeConfig rope{head_dim, 10000.0, {}, 4096};
    r.b.allocate_kv_cache({1, kv_heads, head_dim, 64, blocks, r.b.compute_dtype(), bits});
    const Tensor w = r.weight(width, hidden, 0.3f);
    std::vector<std::pair<int32_t, int32_t>> before;
    for (const auto& s : spans) before.push_back({0, s.first});
    const BatchLayout prefix = layout(before, tables);
    if (prefix.num_tokens() > 0) {
        const Tensor x = r.act(prefix.num_tokens(), hidden, 1.0f), qkv = r.act(prefix.num_tokens(), width);
        r.begin(prefix, rope);
        r.b.linear(x, Weight::dense(w), Epilogue::rope_store_kv({}, heads, 0), qkv);
        if (bits) r.b.attention(qkv, heads, 0, r.act(prefix.num_tokens(), int64_t(heads.num_heads) * head_dim));
    }
    const BatchLayout now = layout(spans, tables);
    const Tensor x = r.act(now.num_tokens(), hidden, 1.0f), qkv = r.act(now.num_tokens(), width);
    const Tensor out = r.act(now.num_tokens(), int64_t(heads.num_heads) * head_dim);
    r.begin(now, rope);
    r.b.linear(x, Weight::dense(w), Epilogue::rope_store_kv({}, heads, 0), qkv);
    r.op = [&r, qkv, heads, out] { r.b.attention(qkv, heads, 0, out); };
    r.outputs = {out};
    return qkv;
}

std::vector<OpCase> test_cases() {
    std::vector<OpCase> cases;
    auto add = [&](std::string name, DType dt, std::function<void(OpRun&)> setup, double nmse = -1) {
        cases.push_back({std::move(name) + " " + type_name(dt), dt, nmse < 0 ? tolerance(dt) : nmse, 0, 0, std::move(setup)});
    };
    for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
        // The language model's ops.
        add("embed 1000x256, 37 tokens", dt, [](OpRun& r) {
            const Tensor table = r.weight(1000, 256, 1.0f), out = r.f32(37, 256);
            r.begin(layout({{0, 37}}, {{0}}), {});
            r.op = [&r, table, out] { r.b.embed(table, out); };
            r.outputs = {out};
        }, 0);
        add("gather_logit_rows 37x256 -> 3", dt, [](OpRun& r) {
            const Tensor x = r.f32(37, 256, 2.0f), out = r.f32(3, 256);
            BatchLayout l = layout({{0, 37}}, {{0}});
            l.logit_rows = {0, 5, 36};
            r.begin(l, {});
            r.op = [&r, x, out] { r.b.gather_logit_rows(x, out); };
            r.outputs = {out};
        }, 0);
        for (int64_t cols : {256, 4096})
            add("rms_norm 37x" + std::to_string(cols), dt, [cols](OpRun& r) {
                const Tensor x = r.f32(37, cols, 2.0f), w = r.weight(1, cols, 0.5f, 1.0f), out = r.act(37, cols);
                r.op = [&r, x, w, out] { r.b.rms_norm(x, w, 1e-5f, out); };
                r.outputs = {out};
            });
        add("rms_norm column view 394x(192 of 576), in place", dt, [](OpRun& r) {
            const Tensor qkv = r.act(394, 576, 1.0f), w = r.weight(1, 192, 0.5f, 1.0f);
            r.op = [&r, qkv, w] { r.b.rms_norm(qkv.cols_view(0, 192), w, 1e-6f, qkv.cols_view(0, 192)); };
            r.outputs = {qkv};
        });
        add("add 37x256", dt, [](OpRun& r) {
            const Tensor x = r.f32(37, 256, 2.0f), d = r.act(37, 256, 1.0f);
            r.op = [&r, x, d] { r.b.add(x, d, nullptr); };
            r.outputs = {x};
        });
        add("add with layer scale, rows repeated 394x192 + 197x192", dt, [](OpRun& r) {
            const Tensor x = r.f32(394, 192, 2.0f), d = r.weight(197, 192, 1.0f), s = r.weight(1, 192, 0.5f);
            r.op = [&r, x, d, s] { r.b.add(x, d, &s); };
            r.outputs = {x};
        });
        // Products: rows 1-8 take the GEMV (each fused form in it), more take the GEMM. Inputs
        // past one full pass of the GEMV's loads (2304 columns).
        for (int64_t rows : {1, 3, 8, 12, 37}) {
            const std::string n = " " + std::to_string(rows) + "x2304 -> 640";
            for (bool bias : {false, true}) {
                const std::string with = bias ? " + bias" : "";
                add("linear dense" + n + with, dt, [rows, bias](OpRun& r) {
                    const Tensor x = r.act(rows, 2304, 1.0f), w = r.weight(640, 2304, 0.05f), out = r.act(rows, 640);
                    const Tensor b = bias ? r.weight(1, 640, 0.5f) : Tensor{};
                    r.op = [&r, x, w, b, out] { r.b.linear(x, Weight::dense(w), Epilogue::plain(b), out); };
                    r.outputs = {out};
                });
                add("linear dense, silu_mul" + n + with, dt, [rows, bias](OpRun& r) {
                    const Tensor x = r.act(rows, 2304, 1.0f), w = r.weight(640, 2304, 0.05f), out = r.act(rows, 320);
                    const Tensor b = bias ? r.weight(1, 640, 0.5f) : Tensor{}, scratch = r.act(rows, 640);
                    r.op = [&r, x, w, b, scratch, out] { r.b.linear(x, Weight::dense(w), Epilogue::silu_mul(b, scratch), out); };
                    r.outputs = {out};
                });
                add("linear dense, add_to" + n + with, dt, [rows, bias](OpRun& r) {
                    const Tensor x = r.act(rows, 2304, 1.0f), w = r.weight(640, 2304, 0.05f), out = r.f32(rows, 640, 3.0f);
                    const Tensor b = bias ? r.weight(1, 640, 0.5f) : Tensor{}, scratch = r.act(rows, 640);
                    r.op = [&r, x, w, b, scratch, out] { r.b.linear(x, Weight::dense(w), Epilogue::add_to(b, scratch), out); };
                    r.outputs = {out};
                });
            }
            add("linear dense, fp32 out" + n, dt, [rows](OpRun& r) {
                const Tensor x = r.act(rows, 2304, 1.0f), w = r.weight(640, 2304, 0.05f), out = r.f32(rows, 640);
                r.op = [&r, x, w, out] { r.b.linear(x, Weight::dense(w), Epilogue::plain(), out); };
                r.outputs = {out};
            });
        }
        // Quantized weights: 4-bit in groups of 128 and of 32 with an input order, 8-bit per
        // channel; the GEMV's fused forms for 1-8 rows, codes expanded for the GEMM past that.
        // FP8: per channel (past 8 rows x quantized a row at a time for cuBLASLt's FP8 product, the
        // CPU reference keeping x as it is: the tolerance is that rounding's), and in groups of
        // 160 inputs, the last short (block-scaled checkpoints; past 8 rows expanded to 16 bits).
        struct Format {
            const char* name;
            int bits;
            int32_t group;
            bool reorder;
            bool fp8 = false;
        };
        for (const Format f : {Format{"int4 g128", 4, 128, false}, Format{"int4 g32 act-order", 4, 32, true}, Format{"int8", 8, 0, false},
                               Format{"fp8", 8, 0, false, true}, Format{"fp8 g160", 8, 160, false, true}})
            for (int64_t rows : {1, 3, 8, 12, 37, 80}) {
                if (f.fp8 && dt == DType::F32) continue;  // FP8 products run in 16-bit arithmetic only
                const double limit = f.fp8 && f.group == 0 && rows > 8 ? 3e-3 : -1;
                const float scale = f.fp8 ? 0.05f / 448.0f : f.bits == 4 ? 0.01f : 0.0005f;
                const std::string n = std::string(" ") + f.name + " " + std::to_string(rows) + "x2304 -> 640";
                add("linear" + n + " + bias", dt, [rows, f, scale](OpRun& r) {
                    const Tensor x = r.act(rows, 2304, 1.0f), b = r.weight(1, 640, 0.5f), out = r.act(rows, 640);
                    const Weight w = r.quantized(640, 2304, f.bits, f.group, scale, f.reorder, f.fp8);
                    r.op = [&r, x, w, b, out] { r.b.linear(x, w, Epilogue::plain(b), out); };
                    r.outputs = {out};
                }, limit);
                add("linear" + n + ", silu_mul", dt, [rows, f, scale](OpRun& r) {
                    const Tensor x = r.act(rows, 2304, 1.0f), out = r.act(rows, 320), scratch = r.act(rows, 640);
                    const Weight w = r.quantized(640, 2304, f.bits, f.group, scale, f.reorder, f.fp8);
                    r.op = [&r, x, w, scratch, out] { r.b.linear(x, w, Epilogue::silu_mul({}, scratch), out); };
                    r.outputs = {out};
                }, limit);
                add("linear" + n + ", add_to", dt, [rows, f, scale](OpRun& r) {
                    const Tensor x = r.act(rows, 2304, 1.0f), out = r.f32(rows, 640, 3.0f), scratch = r.act(rows, 640);
                    const Weight w = r.quantized(640, 2304, f.bits, f.group, scale, f.reorder, f.fp8);
                    r.op = [&r, x, w, scratch, out] { r.b.linear(x, w, Epilogue::add_to({}, scratch), out); };
                    r.outputs = {out};
                }, limit);
            }
        // The q/k/v product with RoPE and the KV store: a decode step (fused in the GEMV, or the
        // tensor-core kernel for 4-bit weights) and a prompt chunk; what was stored is checked
        // through an attention over it.
        for (const bool int4 : {false, true})
            for (int32_t tokens : {1, 3, 37})
                for (bool bias : {false, true}) {
                    if (int4 && (bias || tokens == 3)) continue;
                    add(std::string(int4 ? "linear int4 g128" : "linear dense") + ", rope_store_kv " + std::to_string(tokens) +
                            " sequences x 1 token" + (bias ? " + bias" : ""),
                        dt, [tokens, bias, int4](OpRun& r) {
                            const AttentionShape heads{8, 2, 64};
                            const int64_t width = 12 * 64, hidden = 512;
                            r.b.allocate_kv_cache({1, 2, 64, 64, tokens, r.b.compute_dtype()});
                            std::vector<std::pair<int32_t, int32_t>> spans;
                            std::vector<std::vector<int32_t>> tables;
                            for (int32_t s = 0; s < tokens; ++s) spans.push_back({0, 1}), tables.push_back({s});
                            const Tensor x = r.act(tokens, hidden, 1.0f), qkv = r.act(tokens, width);
                            const Weight w = int4 ? r.quantized(width, hidden, 4, 128, 0.02f) : Weight::dense(r.weight(width, hidden, 0.1f));
                            const Tensor b = bias ? r.weight(1, width, 0.5f) : Tensor{}, out = r.act(tokens, 8 * 64);
                            r.begin(layout(spans, tables), {64, 10000.0, {}, 4096});
                            r.op = [&r, x, w, b, heads, qkv] { r.b.linear(x, w, Epilogue::rope_store_kv(b, heads, 0), qkv); };
                            r.after = [&r, qkv, heads, out] { r.b.attention(qkv, heads, 0, out); };
                            r.outputs = {qkv, out};
                        });
                }
        add("linear dense, rope_store_kv prompt 70+131 tokens", dt, [](OpRun& r) {
            const AttentionShape heads{8, 2, 128};
            const int64_t width = 12 * 128, hidden = 256;
            r.b.allocate_kv_cache({1, 2, 128, 64, 5, r.b.compute_dtype()});
            const Tensor x = r.act(201, hidden, 1.0f), w = r.weight(width, hidden, 0.1f), qkv = r.act(201, width);
            const Tensor out = r.act(201, 8 * 128);
            r.begin(layout({{0, 70}, {0, 131}}, {{0, 1}, {2, 3, 4}}), {128, 10000.0, {RopeScaling::Type::Dynamic, 2.0}, 100});
            r.op = [&r, x, w, heads, qkv] { r.b.linear(x, Weight::dense(w), Epilogue::rope_store_kv({}, heads, 0), qkv); };
            r.after = [&r, qkv, heads, out] { r.b.attention(qkv, heads, 0, out); };
            r.outputs = {qkv, out};
        });
        for (int32_t d : {64, 128})
            for (int32_t g : {1, 2, 4, 8}) {
                const std::string shape = " d" + std::to_string(d) + " gqa" + std::to_string(g);
                const std::vector<std::vector<int32_t>> tables{{0, 1}, {2, 3, 4}, {5}};
                add("attention prefill 70+131+5" + shape, dt,
                    [=](OpRun& r) { attention_setup(r, d, g, {{0, 70}, {0, 131}, {0, 5}}, tables, 6); });
                add("attention chunks after cached prefixes 64+67, 10+60" + shape, dt,
                    [=](OpRun& r) { attention_setup(r, d, g, {{64, 67}, {10, 60}}, {tables[1], tables[0]}, 6); });
                add("attention decode 3 sequences at 70, 131, 5" + shape, dt,
                    [=](OpRun& r) { attention_setup(r, d, g, {{70, 1}, {131, 1}, {5, 1}}, tables, 6); });
                add("attention decode 64 one-token sequences" + shape, dt, [=](OpRun& r) {
                    std::vector<std::pair<int32_t, int32_t>> spans;
                    std::vector<std::vector<int32_t>> singles;
                    for (int32_t s = 0; s < 64; ++s) spans.push_back({0, 1}), singles.push_back({s});
                    attention_setup(r, d, g, spans, singles, 64);
                });
            }
        // A cache of codes: the rows of a batch quantized as attention stores them (in a decode
        // step by the split kernel itself), prompts and decode steps over them, head sizes with
        // their own kernels (64, 128) and any other. A code the two backends round apart moves a
        // value by a step: the tolerance is that of such moves, not of the type.
        for (const int32_t bits : {8, 4})
            for (int32_t d : {16, 64, 128})
                for (int32_t g : {1, 2, 7}) {
                    const std::string shape = " d" + std::to_string(d) + " gqa" + std::to_string(g) + ", " + std::to_string(bits) + "-bit KV";
                    const double codes = dt == DType::F32 ? (bits == 8 ? 1e-6 : 1e-5) : (bits == 8 ? 2e-4 : 4e-3);
                    const std::vector<std::vector<int32_t>> tables{{0, 1}, {2, 3, 4}, {5}};
                    add("attention prefill 70+131+5" + shape, dt,
                        [=](OpRun& r) { attention_setup(r, d, g, {{0, 70}, {0, 131}, {0, 5}}, tables, 6, 2, bits); }, codes);
                    add("attention chunks after cached prefixes 64+67, 10+60" + shape, dt,
                        [=](OpRun& r) { attention_setup(r, d, g, {{64, 67}, {10, 60}}, {tables[1], tables[0]}, 6, 2, bits); }, codes);
                    add("attention decode 3 sequences at 70, 131, 5" + shape, dt,
                        [=](OpRun& r) { attention_setup(r, d, g, {{70, 1}, {131, 1}, {5, 1}}, tables, 6, 2, bits); }, codes);
                    add("attention decode 64 one-token sequences" + shape, dt, [=](OpRun& r) {
                        std::vector<std::pair<int32_t, int32_t>> spans;
                        std::vector<std::vector<int32_t>> singles;
                        for (int32_t s = 0; s < 64; ++s) spans.push_back({0, 1}), singles.push_back({s});
                        attention_setup(r, d, g, spans, singles, 64, 2, bits);
                    }, codes);
                }
        add("copy_kv_block then attention over the copy", dt, [](OpRun& r) {
            const Tensor qkv = attention_setup(r, 64, 2, {{40, 1}}, {{0}}, 2);
            const AttentionShape heads{4, 2, 64};
            const Tensor out = r.act(1, 4 * 64);
            const BatchLayout moved = layout({{40, 1}}, {{1}});
            r.op = [&r] { r.b.copy_kv_block(0, 1); };
            r.after = [&r, moved, qkv, heads, out] {
                r.begin(moved, {64, 10000.0, {}, 4096});
                r.b.attention(qkv, heads, 0, out);
            };
            r.outputs = {out};
        });
        if (dt == DType::F32)
            add("argmax_rows 3x32000", dt, [](OpRun& r) {
                const Tensor logits = r.f32(3, 32000, 8.0f);
                r.op = [&r, logits] {
                    r.ids.assign(3, 0);
                    r.b.argmax_rows(logits, r.ids);
                };
            }, 0);
        // Sampling with every processor alone and together, at Qwen2's vocabulary. Logits are fp32
        // whatever the compute type: these rows run once, on logits of fp32 values (16-bit ones
        // would tie everywhere, and the two backends need not break ties inside top-p alike).
        if (dt == DType::F32)
            for (int64_t vocab : {1000, 151936})
                add("sample_rows 10 processors x 4 draws, vocabulary " + std::to_string(vocab), dt, [vocab](OpRun& r) {
                    auto rows = std::make_shared<std::vector<Backend::SampleRow>>();
                    std::uniform_real_distribution<double> uniform(0.0, 1.0);
                    auto sample = [&](float temperature, int32_t top_k, float top_p, float min_p, float penalty, float presence = 0.0f,
                                      float frequency = 0.0f) {
                        for (int draw = 0; draw < 4; ++draw) {
                            Backend::SampleRow row;
                            row.params.temperature = temperature;
                            row.params.top_k = top_k;
                            row.params.top_p = top_p;
                            row.params.min_p = min_p;
                            row.params.repetition_penalty = penalty;
                            row.params.presence_penalty = presence;
                            row.params.frequency_penalty = frequency;
                            if (penalty != 1.0f)
                                for (int i = 0; i < 300; ++i) row.penalized.push_back(int32_t((i * 7919) % vocab));
                            // A reply whose tokens repeat: some of them also repetition-penalized.
                            std::vector<int32_t> reply;
                            for (int i = 0; i < 400; ++i) reply.push_back(int32_t((i % 150) * 7919 % vocab));
                            row.lowered = lowered_logits(reply, row.params);
                            row.u = uniform(r.rng());
                            rows->push_back(std::move(row));
                        }
                    };
                    sample(0.0f, 0, 1.0f, 0.0f, 1.0f);
                    sample(0.0f, 0, 1.0f, 0.0f, 1.3f);
                    sample(0.0f, 0, 1.0f, 0.0f, 1.0f, 2.0f, 1.5f);
                    sample(1.0f, 0, 1.0f, 0.0f, 1.0f);
                    sample(0.7f, 50, 1.0f, 0.0f, 1.0f);
                    sample(0.8f, 0, 0.9f, 0.0f, 1.0f);
                    sample(1.5f, 0, 0.3f, 0.0f, 1.0f);
                    sample(1.0f, 0, 1.0f, 0.05f, 1.0f);
                    sample(0.8f, 40, 0.8f, 0.02f, 1.1f, 0.5f, 0.3f);
                    sample(1.0f, 7, 1.0f, 0.0f, 1.0f);
                    const Tensor logits = r.f32(int64_t(rows->size()), vocab, 12.0f);
                    r.op = [&r, logits, rows] {
                        r.ids.assign(rows->size(), 0);
                        r.b.sample_rows(logits, *rows, r.ids);
                    };
                }, 0);

        // The vision encoders' ops.
        add("layer_norm 394x192", dt, [](OpRun& r) {
            const Tensor x = r.f32(394, 192, 2.0f), w = r.weight(1, 192, 0.5f, 1.0f), b = r.weight(1, 192, 0.5f), out = r.act(394, 192);
            r.op = [&r, x, w, b, out] { r.b.layer_norm(x, w, &b, 1e-6f, out); };
            r.outputs = {out};
        });
        add("layer_norm 4100x1000 (many tiles)", dt, [](OpRun& r) {
            const Tensor x = r.f32(4100, 1000, 2.0f), w = r.weight(1, 1000, 0.5f, 1.0f), b = r.weight(1, 1000, 0.5f);
            const Tensor out = r.act(4100, 1000);
            r.op = [&r, x, w, b, out] { r.b.layer_norm(x, w, &b, 1e-6f, out); };
            r.outputs = {out};
        });
        for (bool rms : {false, true})
            add(rms ? "add_norm rms 394x192" : "add_norm layer, scaled 394x192", dt, [rms](OpRun& r) {
                const Tensor x = r.f32(394, 192, 2.0f), d = r.act(394, 192, 1.0f), w = r.weight(1, 192, 0.5f, 1.0f);
                const Tensor b = r.weight(1, 192, 0.5f), s = r.weight(1, 192, 0.5f), out = r.act(394, 192);
                r.op = [&r, x, d, w, b, s, out, rms] { r.b.add_norm(x, d, rms ? nullptr : &s, w, rms ? nullptr : &b, 1e-6f, rms, out); };
                r.outputs = {x, out};
            });
        add("patch_rows 2 images 28x28 in 14-pixel patches", dt, [](OpRun& r) {
            const Tensor planes = r.u8(2 * 3 * 28, 28), levels = r.weight(3, 256, 2.0f), out = r.act(2 * 4, 592);
            r.op = [&r, planes, levels, out] { r.b.patch_rows(planes, levels, 14, out); };
            r.outputs = {out};
        }, 0);
        for (auto kind : {Backend::Activation::Gelu, Backend::Activation::QuickGelu})
            add(kind == Backend::Activation::Gelu ? "activate gelu 394x192" : "activate quick_gelu 394x192", dt, [kind](OpRun& r) {
                const Tensor x = r.act(394, 192, 4.0f);
                r.op = [&r, x, kind] { r.b.activate(x, kind); };
                r.outputs = {x};
            });
        struct Full {
            int32_t heads, head_dim;
            int64_t group, images;
        };
        for (const Full f : {Full{3, 16, 197, 2}, Full{3, 64, 1025, 2}, Full{2, 128, 197, 2}, Full{3, 64, 276, 2}, Full{3, 64, 296, 2},
                             Full{2, 64, 577, 1}, Full{16, 64, 1025, 1}})
            add("attention_full " + std::to_string(f.heads) + " heads d" + std::to_string(f.head_dim) + ", " + std::to_string(f.images) +
                    " groups of " + std::to_string(f.group),
                dt, [f](OpRun& r) {
                    const int64_t rows = f.group * f.images, cols = int64_t(f.heads) * f.head_dim;
                    const Tensor qkv = r.act(rows, 3 * cols, 1.0f), out = r.act(rows, cols);
                    r.op = [&r, qkv, f, out] { r.b.attention_full(qkv, f.heads, f.head_dim, f.group, out); };
                    r.outputs = {out};
                });
        add("gather_rows pixel shuffle 394x192 -> 197x768", dt, [](OpRun& r) {
            std::vector<int32_t> order;
            for (int64_t i = 0; i < 4 * 197; ++i) order.push_back(int32_t((i * 7919) % 394));
            const Tensor x = r.act(394, 192, 1.0f), index = r.indices(order, 394), out = r.act(197, 768);
            r.op = [&r, x, index, out] { r.b.gather_rows(x, index, out); };
            r.outputs = {out};
        }, 0);
        add("copy 394x192 to fp32", dt, [](OpRun& r) {
            const Tensor x = r.act(394, 192, 1.0f), out = r.f32(394, 192);
            r.op = [&r, x, out] { r.b.copy(x, out); };
            r.outputs = {out};
        }, 0);
    }
    return cases;
}

// Real shapes (Llama-2-7B / InternLM2-7B decode and prefill, InternViT-300M), for performance mode.
std::vector<OpCase> performance_cases() {
    std::vector<OpCase> cases;
    const DType dt = DType::BF16;
    auto add = [&](std::string name, double bytes, double flops, std::function<void(OpRun&)> setup) {
        cases.push_back({std::move(name), dt, 0, bytes, flops, std::move(setup)});
    };
    struct Product {
        const char* what;
        int64_t in, out;
        Epilogue::Kind kind;
    };
    const int64_t hidden = 4096;
    for (int64_t rows : {1, 8, 16, 64, 512})
        for (const Product p : {Product{"q/k/v + rope_store_kv", hidden, 3 * hidden, Epilogue::Kind::RopeStoreKv},
                                Product{"o + add_to", hidden, hidden, Epilogue::Kind::AddTo},
                                Product{"gate/up + silu_mul", hidden, 2 * 11008, Epilogue::Kind::SiluMul},
                                Product{"down + add_to", 11008, hidden, Epilogue::Kind::AddTo},
                                Product{"lm_head, fp32 out", hidden, 32000, Epilogue::Kind::None}}) {
            // One row per weight format: the product of `rows` tokens with its epilogue as the model runs it.
            for (const int bits : {16, 4, 8}) {
                const bool int4 = bits == 4, fp8 = bits == 8;
                if (bits != 16 && p.kind == Epilogue::Kind::None) continue;  // the output projection stays 16-bit in every format
                const double weight_bytes = int4  ? double(p.in * p.out) / 2 + double(p.out * (p.in / 128)) * 3
                                            : fp8 ? double(p.in * p.out) + double(p.out) * 4
                                                  : double(p.in * p.out) * 2;
                add(std::string(int4 ? "linear int4 g128 " : fp8 ? "linear fp8 " : "linear ") + std::to_string(rows) + "x" + std::to_string(p.in) +
                        " -> " + std::to_string(p.out) + " " + p.what,
                    weight_bytes + double(rows) * double(p.in + p.out) * 2, 2.0 * double(rows * p.in * p.out), [rows, p, int4, fp8](OpRun& r) {
                        const Tensor x = r.act(rows, p.in, 1.0f);
                        const Weight w = int4  ? r.quantized(p.out, p.in, 4, 128, 0.003f)
                                         : fp8 ? r.quantized(p.out, p.in, 8, 0, 0.02f / 448.0f, false, true)
                                               : Weight::dense(r.weight(p.out, p.in, 0.02f));
                        const bool f32_out = p.kind == Epilogue::Kind::AddTo || p.kind == Epilogue::Kind::None;
                        const int64_t cols = p.kind == Epilogue::Kind::SiluMul ? p.out / 2 : p.out;
                        const Tensor out = f32_out ? r.f32(rows, cols, 1.0f) : r.act(rows, cols), scratch = r.act(rows, p.out);
                        Epilogue e = p.kind == Epilogue::Kind::AddTo     ? Epilogue::add_to({}, scratch)
                                     : p.kind == Epilogue::Kind::SiluMul ? Epilogue::silu_mul({}, scratch)
                                                                         : Epilogue::plain();
                        if (p.kind == Epilogue::Kind::RopeStoreKv) {
                            e = Epilogue::rope_store_kv({}, {32, 32, 128}, 0);
                            r.b.allocate_kv_cache({1, 32, 128, 64, int32_t(rows), r.b.compute_dtype()});
                            std::vector<std::pair<int32_t, int32_t>> spans;
                            std::vector<std::vector<int32_t>> tables;
                            for (int64_t s = 0; s < rows; ++s) spans.push_back({0, 1}), tables.push_back({int32_t(s)});
                            r.begin(layout(spans, tables), {128, 10000.0, {}, 4096});
                        }
                        r.op = [&r, x, w, e, out] { r.b.linear(x, w, e, out); };
                    });
            }
        }
    for (int32_t seqs : {1, 8})
        for (int32_t context : {1024, 4096}) {
            const double bytes = double(seqs) * context * 2 * 32 * 128 * 2;
            add("attention decode " + std::to_string(seqs) + " x " + std::to_string(context) + " positions, 32 heads d128", bytes,
                4.0 * seqs * context * 32 * 128, [seqs, context](OpRun& r) {
                    std::vector<std::pair<int32_t, int32_t>> spans;
                    std::vector<std::vector<int32_t>> tables;
                    const int32_t per = context / 64;
                    for (int32_t s = 0; s < seqs; ++s) {
                        spans.push_back({context - 1, 1});
                        std::vector<int32_t> t;
                        for (int32_t k = 0; k < per; ++k) t.push_back(s * per + k);
                        tables.push_back(t);
                    }
                    attention_setup(r, 128, 1, spans, tables, seqs * per, 32);
                });
        }
    add("attention prompt 512 tokens, 32 heads d128", 512.0 * 4096 * 2 * 4, 4.0 * 512 * 512 / 2 * 32 * 128,
        [](OpRun& r) { attention_setup(r, 128, 1, {{0, 512}}, {{0, 1, 2, 3, 4, 5, 6, 7}}, 8, 32); });
    add("rms_norm 1x4096", 4096.0 * 6, 0, [](OpRun& r) {
        const Tensor x = r.f32(1, 4096, 2.0f), w = r.weight(1, 4096, 0.5f, 1.0f), out = r.act(1, 4096);
        r.op = [&r, x, w, out] { r.b.rms_norm(x, w, 1e-5f, out); };
    });
    add("argmax_rows 1x32000", 32000.0 * 4, 0, [](OpRun& r) {
        const Tensor logits = r.f32(1, 32000, 8.0f);
        r.op = [&r, logits] {
            r.ids.assign(1, 0);
            r.b.argmax_rows(logits, r.ids);
        };
    });
    add("sample_rows 1x151936 top-p 0.9", 151936.0 * 4, 0, [](OpRun& r) {
        const Tensor logits = r.f32(1, 151936, 12.0f);
        r.op = [&r, logits] {
            std::vector<Backend::SampleRow> rows(1);
            rows[0].params = {0.8f, 0, 0.9f, 0.0f, 1.0f, 0};
            rows[0].u = 0.5;
            r.ids.assign(1, 0);
            r.b.sample_rows(logits, rows, r.ids);
        };
    });
    add("attention_full 16 heads d64, 1025 rows (InternViT-300M tile)", 1025.0 * 3 * 1024 * 2 * 2, 4.0 * 1025 * 1025 * 1024,
        [](OpRun& r) {
            const Tensor qkv = r.act(1025, 3 * 1024, 1.0f), out = r.act(1025, 1024);
            r.op = [&r, qkv, out] { r.b.attention_full(qkv, 16, 64, 1025, out); };
        });
    add("layer_norm 7x1025x1024", 7.0 * 1025 * 1024 * 6, 0, [](OpRun& r) {
        const Tensor x = r.f32(7 * 1025, 1024, 2.0f), w = r.weight(1, 1024, 0.5f, 1.0f), b = r.weight(1, 1024, 0.5f);
        const Tensor out = r.act(7 * 1025, 1024);
        r.op = [&r, x, w, b, out] { r.b.layer_norm(x, w, &b, 1e-6f, out); };
    });
    return cases;
}

std::vector<float> read_all(Backend& b, const Tensor& t) {
    std::vector<float> out(std::size_t(t.rows * t.cols));
    if (t.stride == t.cols) {
        b.read(t, out);
        return out;
    }
    for (int64_t r = 0; r < t.rows; ++r)
        b.read(t.rows_view(r, 1), std::span<float>(out).subspan(std::size_t(r * t.cols), std::size_t(t.cols)));
    return out;
}

// sum (a - b)² / sum a²: the error relative to the size of the reference.
double nmse(const std::vector<float>& reference, const std::vector<float>& got) {
    double err = 0, norm = 1e-30;
    for (std::size_t i = 0; i < reference.size(); ++i) {
        const double d = double(reference[i]) - double(got[i]);
        err += d * d;
        norm += double(reference[i]) * double(reference[i]);
    }
    return std::isfinite(err) ? err / norm : INFINITY;
}

struct Outcome {
    std::vector<std::vector<float>> values;
    std::vector<int32_t> ids;
};

Outcome run_once(Backend& b, const OpCase& c) {
    OpRun r(b, c.dt, std::hash<std::string>{}(c.name));
    c.setup(r);
    r.op();
    if (r.after) r.after();
    Outcome o;
    for (const Tensor& t : r.outputs) o.values.push_back(read_all(b, t));
    o.ids = r.ids;
    return o;
}

int test_mode(const std::string& filter) {
    int failed = 0, run = 0;
    for (const OpCase& c : test_cases()) {
        if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
        ++run;
        try {
            auto cpu = make_cpu_backend();
            auto gpu = make_backend("cuda");
            gpu->set_compute_dtype(c.dt);
            const Outcome want = run_once(*cpu, c), got = run_once(*gpu, c);
            double worst = 0;
            for (std::size_t i = 0; i < want.values.size(); ++i) worst = std::max(worst, nmse(want.values[i], got.values[i]));
            const bool ok = worst <= c.max_nmse && want.ids == got.ids;
            std::printf("%-4s %-78s nmse %.2e (max %.0e)%s\n", ok ? "ok" : "FAIL", c.name.c_str(), worst, c.max_nmse,
                        want.ids == got.ids ? "" : ", ids differ");
            failed += ok ? 0 : 1;
        } catch (const std::exception& e) {
            std::printf("FAIL %-78s %s\n", c.name.c_str(), e.what());
            ++failed;
        }
    }
    std::printf("%d of %d rows match the CPU\n", run - failed, run);
    return failed == 0 && run > 0 ? 0 : 1;
}

int performance_mode(const std::string& filter) {
    auto gpu = make_backend("cuda");
    gpu->set_compute_dtype(DType::BF16);
    const DeviceInfo d = gpu->device();
    std::printf("%s (%s), bf16; per run: the median of 9 timings of 20 runs back to back, after 5 warm-up runs\n", d.id.c_str(),
                d.name.c_str());
    std::printf("%-72s %10s %9s %9s\n", "row", "us", "GB/s", "TFLOP/s");
    for (const OpCase& c : performance_cases()) {
        if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
        OpRun r(*gpu, c.dt, 1);
        c.setup(r);
        for (int i = 0; i < 5; ++i) r.op();
        // Back to back, as in a forward (the launch overhead overlaps the previous run's work);
        // ops that bring ids back to the host wait for them each run, as they do in use.
        std::vector<double> us;
        for (int i = 0; i < 9; ++i) {
            gpu->synchronize();
            const auto start = std::chrono::steady_clock::now();
            for (int k = 0; k < 20; ++k) r.op();
            gpu->synchronize();
            us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / 20);
        }
        std::sort(us.begin(), us.end());
        const double t = us[us.size() / 2];
        std::printf("%-72s %10.1f %9.0f %9.1f\n", c.name.c_str(), t, c.bytes > 0 ? c.bytes / t / 1e3 : 0.0,
                    c.flops > 0 ? c.flops / t / 1e6 : 0.0);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string mode, filter;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--perf" || a == "--list") mode = a;
        else filter = a;
    }
    if (mode == "--list") {
        for (const OpCase& c : test_cases()) std::printf("%s\n", c.name.c_str());
        for (const OpCase& c : performance_cases()) std::printf("perf: %s\n", c.name.c_str());
        return 0;
    }
    std::string why;
    if (list_gpus(&why).empty()) {
        std::printf("skipped: %s\n", why.c_str());
        return kSkip;
    }
    try {
        return mode == "--perf" ? performance_mode(filter) : test_mode(filter);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "backend_ops: %s\n", e.what());
        return 1;
    }
}
