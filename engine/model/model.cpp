#include "engine/model/model.h"

#include <cmath>
#include <cstring>

#include "engine/util/error.h"

namespace lumen {

LayerNames layer_names(TextFamily family) {
    if (family == TextFamily::InternLM2)
        return {"attention_norm", "ffn_norm", "attention.wo", "feed_forward.w1", "feed_forward.w3", "feed_forward.w2",
                {"attention.wqkv"}};
    return {"input_layernorm", "post_attention_layernorm", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
            "mlp.down_proj", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}};
}

WeightNames resolve_weight_names(const ModelConfig& config, const Checkpoint& checkpoint) {
    const bool internlm = config.text.family == TextFamily::InternLM2;
    const std::string embed_leaf = internlm ? "tok_embeddings.weight" : "embed_tokens.weight";
    const std::vector<std::string> prefixes = internlm ? std::vector<std::string>{"model.", "language_model.model."}
                                                       : std::vector<std::string>{"model.", "language_model.model.", "model.language_model."};
    WeightNames names;
    std::string looked;
    for (const auto& p : prefixes) {
        looked += (looked.empty() ? "" : ", ") + p + embed_leaf;
        if (checkpoint.find(p + embed_leaf)) {
            names.embed = p + embed_leaf;
            names.layer = p + "layers.";
            names.final_norm = p + "norm.weight";
            break;
        }
    }
    if (names.embed.empty()) throw Error("the checkpoint has no token embedding table (looked for " + looked + ")");
    if (!config.text.tie_word_embeddings) {
        const std::vector<std::string> heads = internlm ? std::vector<std::string>{"output.weight", "language_model.output.weight"}
                                                        : std::vector<std::string>{"lm_head.weight", "language_model.lm_head.weight"};
        for (const auto& h : heads)
            if (has_linear(checkpoint, h.substr(0, h.size() - std::string(".weight").size()))) {
                names.lm_head = h;
                break;
            }
        if (names.lm_head.empty())
            throw Error("the checkpoint has no output projection (looked for " + heads[0] + ", " + heads[1] +
                        ") and config.json does not tie it to the embeddings");
    }
    return names;
}

namespace {

// Fetches a tensor and checks its shape (1-D tensors are given as {n}).
const TensorInfo& expect(const Checkpoint& c, const std::string& name, std::vector<int64_t> shape) {
    const TensorInfo* t = c.find(name);
    if (!t) throw Error("the weights have no tensor '" + name + "'");
    if (t->shape != shape)
        throw Error("tensor '" + name + "' has shape " + shape_text(t->shape) + " but config.json implies " + shape_text(shape));
    if (!is_float_type(t->dtype))
        throw Error("tensor '" + name + "' is " + std::string(dtype_name(t->dtype)) + "; Lumen loads F32, F16 and BF16 weights");
    return *t;
}

struct Shapes {
    int64_t hidden, heads, kv_heads, head_dim, inter, vocab;
    int64_t q() const { return heads * head_dim; }
    int64_t kv() const { return kv_heads * head_dim; }
};

Shapes shapes_of(const TextConfig& t) {
    return {t.hidden_size, t.num_heads, t.num_kv_heads, t.head_dim, t.intermediate_size, t.vocab_size};
}

// "lm_head.weight" -> "lm_head": the module a weight tensor belongs to.
std::string module_of(const std::string& weight_name) { return weight_name.substr(0, weight_name.size() - std::string(".weight").size()); }

// Visits every tensor the forward needs with its expected shape: `f(name, shape)` for tables,
// norms and biases, `linear(module, rows, cols)` for the products' weights (stored in any format).
template <class F, class G>
void for_each_needed(const TextConfig& t, const WeightNames& names, F&& f, G&& linear) {
    const Shapes s = shapes_of(t);
    f(names.embed, std::vector<int64_t>{s.vocab, s.hidden});
    f(names.final_norm, std::vector<int64_t>{s.hidden});
    if (!names.lm_head.empty()) linear(module_of(names.lm_head), s.vocab, s.hidden);
    const LayerNames ln = layer_names(t.family);
    for (int64_t l = 0; l < t.num_layers; ++l) {
        const std::string p = names.layer + std::to_string(l) + ".";
        f(p + ln.attn_norm + ".weight", std::vector<int64_t>{s.hidden});
        f(p + ln.ffn_norm + ".weight", std::vector<int64_t>{s.hidden});
        if (ln.qkv.size() == 1) {
            linear(p + ln.qkv[0], s.q() + 2 * s.kv(), s.hidden);
            if (t.qkv_bias) f(p + ln.qkv[0] + ".bias", std::vector<int64_t>{s.q() + 2 * s.kv()});
        } else {
            const int64_t rows[3] = {s.q(), s.kv(), s.kv()};
            for (int k = 0; k < 3; ++k) {
                linear(p + ln.qkv[std::size_t(k)], rows[k], s.hidden);
                if (t.qkv_bias) f(p + ln.qkv[std::size_t(k)] + ".bias", std::vector<int64_t>{rows[k]});
            }
        }
        linear(p + ln.o, s.hidden, s.q());
        if (t.o_bias) f(p + ln.o + ".bias", std::vector<int64_t>{s.hidden});
        linear(p + ln.gate, s.inter, s.hidden);
        linear(p + ln.up, s.inter, s.hidden);
        linear(p + ln.down, s.hidden, s.inter);
        if (t.mlp_bias) {
            f(p + ln.gate + ".bias", std::vector<int64_t>{s.inter});
            f(p + ln.up + ".bias", std::vector<int64_t>{s.inter});
            f(p + ln.down + ".bias", std::vector<int64_t>{s.hidden});
        }
    }
}

}  // namespace

void check_weights(const ModelConfig& config, const Checkpoint& checkpoint) {
    const WeightNames names = resolve_weight_names(config, checkpoint);
    for_each_needed(
        config.text, names, [&](const std::string& name, const std::vector<int64_t>& shape) { expect(checkpoint, name, shape); },
        [&](const std::string& module, int64_t rows, int64_t cols) {
            // 16-bit weights are checked here; packed ones when they are re-laid at load.
            if (checkpoint.find(module + ".weight") || !has_linear(checkpoint, module)) expect(checkpoint, module + ".weight", {rows, cols});
        });
}

Model::Model(const std::filesystem::path& dir, Backend& backend, std::optional<DType> compute, const WeightChoice& choice)
    : backend_(backend), config_(load_model_config(dir)), checkpoint_(std::make_unique<Checkpoint>(dir)), choice_(choice) {
    const TextConfig& t = config_.text;
    attention_ = {int32_t(t.num_heads), int32_t(t.num_kv_heads), int32_t(t.head_dim)};
    rope_ = {int32_t(t.head_dim), t.rope_theta, t.rope_scaling, t.max_position_embeddings};
    backend_.set_compute_dtype(compute.value_or(checkpoint_->main_dtype().value_or(DType::F32)));
    try {
        quantization_ = load_quantization(dir, config_.raw);
        if (quantization_.quantized() && choice_.kind != WeightChoice::Kind::AsStored)
            throw Error("the weights are already " + quantization_.describe() + "; quantizing at load (" + choice_.describe() +
                        ") applies to 16-bit folders (choose \"as stored\")");
        load_weights(*checkpoint_);
    } catch (const Error& e) {
        if (e.device_lost()) throw;
        // Name the folder: the message names the tensor within it.
        const std::string message = e.what();
        throw Error(message.starts_with(dir.string()) ? message : dir.string() + ": " + message);
    }
}

Model::Model(const ModelConfig& config, Backend& backend, DType dtype, uint64_t seed, const WeightChoice& choice)
    : backend_(backend), config_(config), choice_(choice) {
    const TextConfig& t = config_.text;
    attention_ = {int32_t(t.num_heads), int32_t(t.num_kv_heads), int32_t(t.head_dim)};
    rope_ = {int32_t(t.head_dim), t.rope_theta, t.rope_scaling, t.max_position_embeddings};
    backend_.set_compute_dtype(dtype);
    random_weights(dtype, seed);
}

Model::~Model() = default;

Tensor Model::keep(Buffer weight) {
    weights_.push_back(std::move(weight));
    return weights_.back().tensor();
}

void Model::random_weights(DType dtype, uint64_t seed) {
    const TextConfig& t = config_.text;
    const Shapes s = shapes_of(t);
    uint64_t next = seed;
    // Scales keep activations in a sane range whatever the width: std ~ 1/sqrt(in) (uniform values
    // of width 3.4/sqrt(in); codes uniform over their range times a matching scale).
    auto matrix = [&](int64_t rows, int64_t cols) {
        weight_bytes_ += uint64_t(rows * cols) * dtype_size(dtype);
        return keep(backend_.random_weight(dtype, rows, cols, ++next, 0.0f, 3.4f / std::sqrt(float(cols))));
    };
    auto linear = [&](int64_t rows, int64_t cols) {
        const bool int4 = choice_.kind == WeightChoice::Kind::Int4 && cols % choice_.group_size == 0;
        const bool fp8 = choice_.kind == WeightChoice::Kind::Fp8;
        if (choice_.kind == WeightChoice::Kind::AsStored || (choice_.kind == WeightChoice::Kind::Int4 && !int4))
            return Weight::dense(matrix(rows, cols));
        QuantizedParts parts;
        parts.format = int4 ? Weight::Format::Int4 : fp8 ? Weight::Format::Fp8 : Weight::Format::Int8;
        parts.rows = rows, parts.cols = cols, parts.group_size = int4 ? choice_.group_size : fp8 ? int32_t(cols) : 0;
        parts.seed = ++next;
        // Codes uniform over their range (4-bit minus zero 8: std 4.6; bytes: std 74; FP8 codes
        // below 2 in magnitude: std 0.60) times a scale that gives the 16-bit weights' spread.
        parts.scale = 0.98f / ((int4 ? 4.6f : fp8 ? 0.60f : 74.0f) * std::sqrt(float(cols)));
        const int64_t groups = int4 ? cols / choice_.group_size : 1;
        weight_bytes_ += uint64_t(rows * cols) / (int4 ? 2 : 1) + uint64_t(rows * groups) * (dtype_size(dtype) + (int4 ? 1 : 0));
        return keep(backend_.quantized_weight(parts));
    };
    auto vector = [&](int64_t n, float center, float scale) {
        weight_bytes_ += uint64_t(n) * dtype_size(dtype);
        return keep(backend_.random_weight(dtype, 1, n, ++next, center, scale));
    };
    embed_ = keep(backend_.random_weight(dtype, s.vocab, s.hidden, ++next, 0.0f, 1.0f));
    weight_bytes_ += uint64_t(s.vocab * s.hidden) * dtype_size(dtype);
    final_norm_ = vector(s.hidden, 1.0f, 0.2f);
    lm_head_ = Weight::dense(t.tie_word_embeddings ? embed_ : matrix(s.vocab, s.hidden));
    for (int64_t l = 0; l < t.num_layers; ++l) {
        Layer layer;
        layer.attn_norm = vector(s.hidden, 1.0f, 0.2f);
        layer.ffn_norm = vector(s.hidden, 1.0f, 0.2f);
        layer.wqkv = linear(s.q() + 2 * s.kv(), s.hidden);
        if (t.qkv_bias) layer.bqkv = vector(s.q() + 2 * s.kv(), 0.0f, 0.2f);
        layer.wo = linear(s.hidden, s.q());
        if (t.o_bias) layer.bo = vector(s.hidden, 0.0f, 0.2f);
        layer.w_gate_up = linear(2 * s.inter, s.hidden);
        layer.w_down = linear(s.hidden, s.inter);
        if (t.mlp_bias) {
            layer.b_gate_up = vector(2 * s.inter, 0.0f, 0.2f);
            layer.b_down = vector(s.hidden, 0.0f, 0.2f);
        }
        layers_.push_back(layer);
    }
}

std::string Model::weights_description() const {
    std::string d = quantization_.quantized() ? quantization_.describe() : choice_.kind == WeightChoice::Kind::AsStored ? "16-bit" : choice_.describe();
    if (!kept_16_bit_.empty())
        d += "; " + std::to_string(kept_16_bit_.size()) + " layer" + (kept_16_bit_.size() == 1 ? "" : "s") + " kept 16-bit (" +
             kept_16_bit_.front() + (kept_16_bit_.size() > 1 ? ", ..." : "") + ": input width not a multiple of the group size)";
    return d;
}

Weight Model::upload(HostWeight w, const std::string& name, bool quantizable) {
    if (quantizable && w.format == Weight::Format::Dense && choice_.kind != WeightChoice::Kind::AsStored) {
        if (choice_.kind == WeightChoice::Kind::Int8) w = quantize_int8(w);
        else if (choice_.kind == WeightChoice::Kind::Fp8) w = quantize_fp8(w);
        else if (w.cols % choice_.group_size == 0) w = quantize_int4(w, choice_.group_size);
        else kept_16_bit_.push_back(name);
    }
    weight_bytes_ += w.bytes();
    auto held = std::make_unique<HostWeight>(std::move(w));
    const HostWeight& h = *held;
    Weight out;
    if (h.format == Weight::Format::Dense) {
        out = Weight::dense(keep(backend_.weight(h.dense_data(), h.dtype, h.rows, h.cols)));
    } else {
        QuantizedParts parts;
        parts.format = h.format;
        parts.rows = h.rows, parts.cols = h.cols, parts.group_size = h.group_size;
        parts.codes = h.values.data();
        parts.scales = reinterpret_cast<const float*>(h.scales.data());
        parts.zeros = h.zeros.empty() ? nullptr : h.zeros.data();
        parts.input_order = h.input_order.empty() ? nullptr : h.input_order.data();
        out = keep(backend_.quantized_weight(parts));
    }
    if (backend_.weights_stay_on_host()) host_.push_back(std::move(held));
    return out;
}

Weight Model::keep(Backend::OwnedWeight w) {
    for (Buffer& b : w.buffers) weights_.push_back(std::move(b));
    return w.weight;
}

void Model::load_weights(const Checkpoint& c) {
    check_weights(config_, c);
    const TextConfig& t = config_.text;
    const Shapes s = shapes_of(t);
    const WeightNames names = resolve_weight_names(config_, c);
    const Quantization& stored = quantization_;
    auto direct = [&](const std::string& name) {
        const TensorInfo& info = *c.find(name);
        weight_bytes_ += info.data.size();
        const int64_t rows = info.shape.size() == 2 ? info.shape[0] : 1;
        return keep(backend_.weight(info.data.data(), info.dtype, rows, info.shape.back()));
    };
    // A bias as a column of rows, so that it re-lays as its weight's rows do.
    auto bias_view = [&](const std::string& name) {
        const TensorInfo& info = *c.find(name);
        HostWeight v;
        v.rows = info.shape[0], v.cols = 1, v.dtype = info.dtype, v.mapped = info.data.data();
        return v;
    };
    // Rows of biases stacked into one row, in their stored type (or fp32 where the parts differ).
    auto bias_row = [&](const std::vector<RowRange>& parts) {
        auto held = std::make_unique<HostWeight>(concat_rows(parts));
        weight_bytes_ += held->bytes();
        const Tensor row = keep(backend_.weight(held->dense_data(), held->dtype, 1, held->rows));
        if (backend_.weights_stay_on_host()) host_.push_back(std::move(held));
        return row;
    };

    embed_ = direct(names.embed);
    final_norm_ = direct(names.final_norm);
    lm_head_ = names.lm_head.empty() ? Weight::dense(embed_)
                                     : upload(read_linear(c, stored, module_of(names.lm_head), s.vocab, s.hidden), module_of(names.lm_head),
                                              /*quantizable=*/false);
    const LayerNames ln = layer_names(t.family);
    for (int64_t l = 0; l < t.num_layers; ++l) {
        const std::string p = names.layer + std::to_string(l) + ".";
        Layer layer;
        layer.attn_norm = direct(p + ln.attn_norm + ".weight");
        layer.ffn_norm = direct(p + ln.ffn_norm + ".weight");
        if (ln.qkv.size() == 1) {
            // InternLM2 packs q, k and v per key/value head: [kv_heads][groups + 2][head_dim]. Re-lay
            // as all query heads, then all keys, then all values (rows, so any format re-lays alike).
            const int64_t groups = s.heads / s.kv_heads, D = s.head_dim;
            auto ranges = [&](const HostWeight* packed) {
                std::vector<RowRange> q, k, v;
                for (int64_t g = 0; g < s.kv_heads; ++g) {
                    const int64_t base = g * (groups + 2) * D;
                    q.push_back({packed, base, groups * D});
                    k.push_back({packed, base + groups * D, D});
                    v.push_back({packed, base + (groups + 1) * D, D});
                }
                q.insert(q.end(), k.begin(), k.end());
                q.insert(q.end(), v.begin(), v.end());
                return q;
            };
            const HostWeight packed = read_linear(c, stored, p + ln.qkv[0], s.q() + 2 * s.kv(), s.hidden);
            layer.wqkv = upload(concat_rows(ranges(&packed)), p + ln.qkv[0]);
            if (t.qkv_bias) {
                const HostWeight bias = bias_view(p + ln.qkv[0] + ".bias");
                layer.bqkv = bias_row(ranges(&bias));
            }
        } else {
            const HostWeight wq = read_linear(c, stored, p + ln.qkv[0], s.q(), s.hidden);
            const HostWeight wk = read_linear(c, stored, p + ln.qkv[1], s.kv(), s.hidden);
            const HostWeight wv = read_linear(c, stored, p + ln.qkv[2], s.kv(), s.hidden);
            layer.wqkv = upload(concat_rows({{&wq, 0, s.q()}, {&wk, 0, s.kv()}, {&wv, 0, s.kv()}}), p + "q/k/v");
            if (t.qkv_bias) {
                const HostWeight bq = bias_view(p + ln.qkv[0] + ".bias"), bk = bias_view(p + ln.qkv[1] + ".bias"),
                                 bv = bias_view(p + ln.qkv[2] + ".bias");
                layer.bqkv = bias_row({{&bq, 0, s.q()}, {&bk, 0, s.kv()}, {&bv, 0, s.kv()}});
            }
        }
        layer.wo = upload(read_linear(c, stored, p + ln.o, s.hidden, s.q()), p + ln.o);
        if (t.o_bias) layer.bo = direct(p + ln.o + ".bias");
        const HostWeight gate = read_linear(c, stored, p + ln.gate, s.inter, s.hidden);
        const HostWeight up = read_linear(c, stored, p + ln.up, s.inter, s.hidden);
        layer.w_gate_up = upload(concat_rows({{&gate, 0, s.inter}, {&up, 0, s.inter}}), p + ln.gate + "/up");
        layer.w_down = upload(read_linear(c, stored, p + ln.down, s.hidden, s.inter), p + ln.down);
        if (t.mlp_bias) {
            const HostWeight bg = bias_view(p + ln.gate + ".bias"), bu = bias_view(p + ln.up + ".bias");
            layer.b_gate_up = bias_row({{&bg, 0, s.inter}, {&bu, 0, s.inter}});
            layer.b_down = direct(p + ln.down + ".bias");
        }
        layers_.push_back(layer);
    }
}

void Model::ensure_capacity(int64_t tokens, int64_t logit_rows) {
    const TextConfig& t = config_.text;
    const Shapes s = shapes_of(t);
    if (tokens > capacity_) {
        for (Buffer* a : {&x_, &h_, &qkv_, &attn_, &delta_, &gate_up_, &act_}) a->reset();  // before the larger ones are made
        capacity_ = std::max<int64_t>(tokens, 16);
        const DType c = backend_.compute_dtype();
        x_ = backend_.activation(capacity_, s.hidden, DType::F32);  // the residual stream stays fp32
        h_ = backend_.activation(capacity_, s.hidden, c);
        delta_ = backend_.activation(capacity_, s.hidden, c);
        qkv_ = backend_.activation(capacity_, s.q() + 2 * s.kv(), c);
        attn_ = backend_.activation(capacity_, s.q(), c);
        gate_up_ = backend_.activation(capacity_, 2 * s.inter, c);
        act_ = backend_.activation(capacity_, s.inter, c);
    }
    if (logit_rows > logit_capacity_) {
        for (Buffer* a : {&selected_, &normed_, &logits_}) a->reset();
        logit_capacity_ = std::max<int64_t>(logit_rows, 4);
        selected_ = backend_.activation(logit_capacity_, s.hidden, DType::F32);
        normed_ = backend_.activation(logit_capacity_, s.hidden, backend_.compute_dtype());
        logits_ = backend_.activation(logit_capacity_, s.vocab, DType::F32);
    }
}

Tensor Model::forward(const BatchLayout& batch, const Probe& probe) {
    const TextConfig& t = config_.text;
    const int64_t T = batch.num_tokens();
    const int64_t L = int64_t(batch.logit_rows.size());
    ensure_capacity(T, L);
    const float eps = float(t.norm_eps);
    Tensor x = x_.rows_view(0, T), h = h_.rows_view(0, T), delta = delta_.rows_view(0, T);
    Tensor qkv = qkv_.rows_view(0, T), attn = attn_.rows_view(0, T);
    Tensor gate_up = gate_up_.rows_view(0, T), act = act_.rows_view(0, T);

    for (int32_t id : batch.token_ids)
        if (id < 0 || id >= t.vocab_size)
            throw Error("token id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(t.vocab_size) + ")");
    Tensor selected = selected_.rows_view(0, L), normed = normed_.rows_view(0, L), logits = logits_.rows_view(0, L);
    backend_.begin_batch(batch, rope_);
    auto ops = [&] {
        backend_.embed(embed_, x);
        for (const auto& insert : batch.inserts) backend_.copy(insert.rows, x.rows_view(insert.first, insert.rows.rows));
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const Layer& w = layers_[l];
            const int64_t layer = int64_t(l);
            backend_.rms_norm(x, w.attn_norm, eps, h);
            if (probe) probe(layer, ProductInput::QKV, h);
            backend_.linear(h, w.wqkv, Epilogue::rope_store_kv(w.bqkv, attention_, int32_t(l)), qkv);
            backend_.attention(qkv, attention_, int32_t(l), attn);
            if (probe) probe(layer, ProductInput::O, attn);
            backend_.linear(attn, w.wo, Epilogue::add_to(w.bo, delta), x);
            backend_.rms_norm(x, w.ffn_norm, eps, h);
            if (probe) probe(layer, ProductInput::GateUp, h);
            backend_.linear(h, w.w_gate_up, Epilogue::silu_mul(w.b_gate_up, gate_up), act);
            if (probe) probe(layer, ProductInput::Down, act);
            backend_.linear(act, w.w_down, Epilogue::add_to(w.b_down, delta), x);
        }
        if (L == 0) return;  // a prompt chunk that needs no next-token logits yet
        backend_.gather_logit_rows(x, selected);
        backend_.rms_norm(selected, final_norm_, eps, normed);
        backend_.linear(normed, lm_head_, Epilogue::plain(), logits);
    };
    // Image rows change with every image: such a forward is run directly, never recorded for replay.
    if (batch.inserts.empty() && !probe) backend_.run_forward(ops);
    else ops();
    if (L == 0) return Tensor{};
    return logits;
}

}  // namespace lumen
