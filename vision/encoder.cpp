#include "vision/encoder.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>

#include "engine/model/weight_formats.h"
#include "engine/util/dtype.h"
#include "engine/util/error.h"
#include "vision/preprocess.h"

namespace lumen::vision {
namespace {

// Where each layout keeps its tensors, relative to the tower's, a layer's and the projector's prefix.
struct Names {
    std::vector<std::string> tower_prefixes, projector_prefixes;
    std::string patch_w, patch_b, class_emb, pos_emb, pre_norm;
    std::string layer;  // "encoder.layers." or "encoder.layer."
    std::string norm1, norm2, q, k, v, qkv, q_norm, k_norm, out, fc1, fc2, ls1, ls2;
    std::string proj_norm, proj1, proj2;
};

Names names_for(ModelKind kind) {
    Names n;
    switch (kind) {
    case ModelKind::Llava:
        n.tower_prefixes = {"vision_tower.vision_model.", "model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower."};
        n.projector_prefixes = {"multi_modal_projector.", "model.multi_modal_projector."};
        n.patch_w = "embeddings.patch_embedding.weight";
        n.class_emb = "embeddings.class_embedding";
        n.pos_emb = "embeddings.position_embedding.weight";
        n.pre_norm = "pre_layrnorm";
        n.layer = "encoder.layers.";
        n.norm1 = "layer_norm1", n.norm2 = "layer_norm2";
        n.q = "self_attn.q_proj", n.k = "self_attn.k_proj", n.v = "self_attn.v_proj", n.out = "self_attn.out_proj";
        n.fc1 = "mlp.fc1", n.fc2 = "mlp.fc2";
        n.proj1 = "linear_1", n.proj2 = "linear_2";
        break;
    case ModelKind::InternVLChat:
        n.tower_prefixes = {"vision_model."};
        n.projector_prefixes = {"mlp1."};
        n.patch_w = "embeddings.patch_embedding.weight", n.patch_b = "embeddings.patch_embedding.bias";
        n.class_emb = "embeddings.class_embedding";
        n.pos_emb = "embeddings.position_embedding";
        n.layer = "encoder.layers.";
        n.norm1 = "norm1", n.norm2 = "norm2";
        n.qkv = "attn.qkv", n.q_norm = "attn.q_norm", n.k_norm = "attn.k_norm", n.out = "attn.proj";
        n.fc1 = "mlp.fc1", n.fc2 = "mlp.fc2", n.ls1 = "ls1", n.ls2 = "ls2";
        n.proj_norm = "0", n.proj1 = "1", n.proj2 = "3";
        break;
    case ModelKind::InternVLHf:
        n.tower_prefixes = {"model.vision_tower.", "vision_tower."};
        n.projector_prefixes = {"model.multi_modal_projector.", "multi_modal_projector."};
        n.patch_w = "embeddings.patch_embeddings.projection.weight", n.patch_b = "embeddings.patch_embeddings.projection.bias";
        n.class_emb = "embeddings.cls_token";
        n.pos_emb = "embeddings.position_embeddings";
        n.layer = "encoder.layer.";
        n.norm1 = "layernorm_before", n.norm2 = "layernorm_after";
        n.q = "attention.q_proj", n.k = "attention.k_proj", n.v = "attention.v_proj", n.out = "attention.projection_layer";
        n.q_norm = "attention.q_norm", n.k_norm = "attention.k_norm";
        n.fc1 = "mlp.fc1", n.fc2 = "mlp.fc2", n.ls1 = "lambda_1", n.ls2 = "lambda_2";
        n.proj_norm = "layer_norm", n.proj1 = "linear_1", n.proj2 = "linear_2";
        break;
    case ModelKind::Text: throw Error("the model has no vision tower");
    }
    return n;
}

std::string pick_prefix(const Checkpoint& c, const std::vector<std::string>& prefixes, const std::string& probe, const char* what) {
    for (const auto& p : prefixes)
        if (c.find(p + probe)) return p;
    throw Error(std::string("the checkpoint has no ") + what + " (looked for " + prefixes.front() + probe + ")");
}

// torch's bicubic kernel (a = -0.75): the weights of the four samples around a point t of the way
// from the second to the third.
std::array<float, 4> cubic_weights(float t) {
    constexpr float a = -0.75f;
    auto near = [](float x) { return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f; };  // |x| <= 1
    auto far = [](float x) { return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a; };  // 1 < |x| < 2
    return {far(t + 1.0f), near(t), near(1.0f - t), far(2.0f - t)};
}

// Position embeddings [class, from x from grid] resampled to [class, to x to grid] as
// F.interpolate(mode="bicubic", align_corners=False) does in fp32: source coordinate
// (i + 0.5) · from / to - 0.5, samples past the edges clamped, rows then columns.
void resample_positions(const TensorInfo& t, int64_t from, int64_t to, int64_t D, float* out) {
    std::vector<float> in(std::size_t(t.numel()));
    to_f32(t.data.data(), t.dtype, in.size(), in.data());
    std::copy_n(in.begin(), D, out);  // the class embedding stays
    const float scale = float(from) / float(to);
    auto at = [&](int64_t y, int64_t x) {
        y = std::clamp<int64_t>(y, 0, from - 1), x = std::clamp<int64_t>(x, 0, from - 1);
        return in.data() + (1 + y * from + x) * D;
    };
    for (int64_t oy = 0; oy < to; ++oy) {
        const float sy = scale * (float(oy) + 0.5f) - 0.5f;
        const int64_t y0 = int64_t(std::floor(sy));
        const auto wy = cubic_weights(sy - float(y0));
        for (int64_t ox = 0; ox < to; ++ox) {
            const float sx = scale * (float(ox) + 0.5f) - 0.5f;
            const int64_t x0 = int64_t(std::floor(sx));
            const auto wx = cubic_weights(sx - float(x0));
            float* dst = out + (1 + oy * to + ox) * D;
            for (int64_t d = 0; d < D; ++d) {
                float rows[4];
                for (int k = 0; k < 4; ++k) {
                    const int64_t y = y0 - 1 + k;
                    rows[k] = at(y, x0 - 1)[d] * wx[0] + at(y, x0)[d] * wx[1] + at(y, x0 + 1)[d] * wx[2] + at(y, x0 + 2)[d] * wx[3];
                }
                dst[d] = rows[0] * wy[0] + rows[1] * wy[1] + rows[2] * wy[2] + rows[3] * wy[3];
            }
        }
    }
}

}  // namespace

VisionEncoder::VisionEncoder(const std::filesystem::path& dir, VisionConfig config, Backend& backend, TowerWeights tower)
    : config_(std::move(config)), backend_(backend), tower_weights_(tower), checkpoint_(std::make_unique<Checkpoint>(dir)) {
    load(checkpoint_.get(), DType::F32, 0);
}

VisionEncoder::VisionEncoder(VisionConfig config, Backend& backend, DType dtype, uint64_t seed, TowerWeights tower)
    : config_(std::move(config)), backend_(backend), tower_weights_(tower) {
    load(nullptr, dtype, seed);
}

VisionEncoder::~VisionEncoder() = default;

Tensor VisionEncoder::keep(Buffer weight) {
    weights_.push_back(std::move(weight));
    return weights_.back().tensor();
}

Weight VisionEncoder::keep(Backend::OwnedWeight weight) {
    for (Buffer& b : weight.buffers) weights_.push_back(std::move(b));
    return weight.weight;
}

void VisionEncoder::load(const Checkpoint* checkpoint, DType random_dtype, uint64_t seed) {
    const VisionConfig& v = config_;
    const Names n = names_for(v.kind);
    const std::string tower = checkpoint ? pick_prefix(*checkpoint, n.tower_prefixes, n.patch_w, "vision tower") : n.tower_prefixes.front();
    const std::string projector =
        checkpoint ? pick_prefix(*checkpoint, n.projector_prefixes, n.proj1 + ".weight", "vision projector") : n.projector_prefixes.front();
    // Random weights keep activations in range: matrices ~ 1/sqrt(inputs), norms around one.
    auto random_buffer = [&](const std::string& name, int64_t rows, int64_t cols) {
        const bool matrix = rows > 1 && name.find("position") == std::string::npos;
        const bool norm = name.find("norm") != std::string::npos && name.ends_with("weight");
        return backend_.random_weight(random_dtype, rows, cols, ++seed, norm ? 1.0f : 0.0f, matrix ? 3.4f / std::sqrt(float(cols)) : 0.2f);
    };
    auto random = [&](const std::string& name, int64_t rows, int64_t cols) {
        weight_bytes_ += uint64_t(rows * cols) * dtype_size(random_dtype);
        return keep(random_buffer(name, rows, cols));
    };
    const int64_t D = v.hidden, P = v.patch, C = v.channels, N = v.patches_per_side() * v.patches_per_side();

    // A tensor of `numel` = rows * cols elements (any layout of that many, e.g. [1, 1, D]).
    auto get = [&](const std::string& name, int64_t rows, int64_t cols) -> const TensorInfo& {
        const TensorInfo* t = checkpoint->find(name);
        if (!t) throw Error("the checkpoint has no tensor " + name);
        if (!is_float_type(t->dtype)) throw Error(name + " is " + std::string(dtype_name(t->dtype)) + ", not a float type");
        if (t->numel() != rows * cols)
            throw Error(name + " has " + std::to_string(t->numel()) + " values where " + std::to_string(rows) + "x" +
                        std::to_string(cols) + " were expected");
        return *t;
    };
    auto direct = [&](const std::string& name, int64_t rows, int64_t cols) {
        if (!checkpoint) return random(name, rows, cols);
        const TensorInfo& t = get(name, rows, cols);
        weight_bytes_ += t.data.size();
        return keep(backend_.weight(t.data.data(), t.dtype, rows, cols));
    };
    // Several tensors one after another (q, k and v into one matrix, or their biases into one row):
    // the values and their type, kept in owned_.
    auto stacked_values = [&](const std::vector<std::string>& names, int64_t rows_each, int64_t cols) {
        std::vector<const TensorInfo*> parts;
        for (const auto& name : names) parts.push_back(&get(name, rows_each, cols));
        for (const auto* p : parts)
            if (p->dtype != parts.front()->dtype) throw Error(names.front() + ": q, k and v are stored in different types");
        auto& buffer = owned_.emplace_back();
        for (const auto* p : parts) buffer.insert(buffer.end(), p->data.begin(), p->data.end());
        return std::pair{&buffer, parts.front()->dtype};
    };
    auto stacked_bias = [&](const std::vector<std::string>& names, int64_t cols) {
        const int64_t total = cols * int64_t(names.size());
        if (!checkpoint) return random(names.front(), 1, total);
        const auto [buffer, dtype] = stacked_values(names, 1, cols);
        weight_bytes_ += buffer->size();
        return keep(backend_.weight(buffer->data(), dtype, 1, total));
    };
    // A tower layer's matrix [rows, cols] from `values` (nullptr: random), as stored or in FP8.
    const bool fp8 = tower_weights_ == TowerWeights::Fp8;
    auto tower_matrix = [&](const std::string& name, const std::byte* values, DType dtype, int64_t rows, int64_t cols) {
        if (!fp8) return Weight::dense(values ? keep(backend_.weight(values, dtype, rows, cols)) : random(name, rows, cols));
        QuantizedParts parts;
        parts.format = Weight::Format::Fp8;
        parts.rows = rows, parts.cols = cols, parts.group_size = int32_t(cols);
        // Random weights: the very ones the stored form gets from the same seed, quantized, so that
        // the two forms' encodings can be compared.
        std::vector<float> drawn;
        if (!values) {
            const Buffer dense = random_buffer(name, rows, cols);
            drawn.resize(std::size_t(rows * cols));
            backend_.read(dense, drawn);
            values = reinterpret_cast<const std::byte*>(drawn.data()), dtype = DType::F32;
        }
        HostWeight dense;
        dense.rows = rows, dense.cols = cols, dense.dtype = dtype, dense.mapped = values;
        HostWeight codes = quantize_fp8(dense);
        // Kept: a backend may compute from them where they are (the CPU's does).
        parts.codes = owned_.emplace_back(std::move(codes.values)).data();
        parts.scales = reinterpret_cast<const float*>(owned_.emplace_back(std::move(codes.scales)).data());
        weight_bytes_ += uint64_t(rows * cols) + uint64_t(rows) * 4;
        return keep(backend_.quantized_weight(parts));
    };
    auto tower_direct = [&](const std::string& name, int64_t rows, int64_t cols) {
        if (!checkpoint) return tower_matrix(name, nullptr, random_dtype, rows, cols);
        const TensorInfo& t = get(name, rows, cols);
        if (!fp8) weight_bytes_ += t.data.size();
        return tower_matrix(name, t.data.data(), t.dtype, rows, cols);
    };
    auto tower_stacked = [&](const std::vector<std::string>& names, int64_t rows_each, int64_t cols) {
        const int64_t total = rows_each * int64_t(names.size());
        if (!checkpoint) return tower_matrix(names.front(), nullptr, random_dtype, total, cols);
        const auto [buffer, dtype] = stacked_values(names, rows_each, cols);
        if (!fp8) weight_bytes_ += buffer->size();
        const Weight w = tower_matrix(names.front(), buffer->data(), dtype, total, cols);
        if (fp8) buffer->clear(), buffer->shrink_to_fit();  // the codes were made from it
        return w;
    };

    // A convolution with stride = kernel is a matrix over patches; its rows are padded with zeros
    // (see patch_columns).
    const int64_t K = C * P * P, padded = patch_columns();
    if (!checkpoint) {
        patch_w_ = random(tower + n.patch_w, D, padded);
    } else {
        const TensorInfo& t = get(tower + n.patch_w, D, K);
        const std::size_t elem = dtype_size(t.dtype);
        auto& buffer = owned_.emplace_back(std::size_t(D * padded) * elem);
        for (int64_t r = 0; r < D; ++r)
            std::memcpy(buffer.data() + std::size_t(r * padded) * elem, t.data.data() + std::size_t(r * K) * elem, std::size_t(K) * elem);
        weight_bytes_ += t.data.size();
        patch_w_ = keep(backend_.weight(buffer.data(), t.dtype, D, padded));
    }
    if (!n.patch_b.empty()) patch_b_ = direct(tower + n.patch_b, 1, D);
    // What the 8-bit samples stand for: the processor's rescale and normalisation as a table.
    if (C != 3) throw Error("the vision tower takes " + std::to_string(C) + " channels; images have 3");
    {
        const std::vector<float> levels = pixel_levels(v.preprocess);
        auto& buffer = owned_.emplace_back(levels.size() * sizeof(float));
        std::memcpy(buffer.data(), levels.data(), buffer.size());
        pixel_levels_ = keep(backend_.weight(buffer.data(), DType::F32, C, 256));
    }
    class_emb_ = direct(tower + n.class_emb, 1, D);
    if (checkpoint && v.position_grid > 0) {
        const TensorInfo& t = get(tower + n.pos_emb, v.position_grid * v.position_grid + 1, D);
        auto& buffer = owned_.emplace_back(std::size_t((N + 1) * D) * sizeof(float));
        resample_positions(t, v.position_grid, v.patches_per_side(), D, reinterpret_cast<float*>(buffer.data()));
        weight_bytes_ += t.data.size();
        pos_emb_ = keep(backend_.weight(buffer.data(), DType::F32, N + 1, D));
    } else {
        pos_emb_ = direct(tower + n.pos_emb, N + 1, D);
    }
    if (v.pre_norm) {
        pre_norm_w_ = direct(tower + n.pre_norm + ".weight", 1, D);
        pre_norm_b_ = direct(tower + n.pre_norm + ".bias", 1, D);
    }
    for (int64_t l = 0; l < v.layers_run(); ++l) {
        const std::string p = tower + n.layer + std::to_string(l) + ".";
        Layer L;
        L.norm1_w = direct(p + n.norm1 + ".weight", 1, D);
        L.norm2_w = direct(p + n.norm2 + ".weight", 1, D);
        if (!v.rms_norm) {
            L.norm1_b = direct(p + n.norm1 + ".bias", 1, D);
            L.norm2_b = direct(p + n.norm2 + ".bias", 1, D);
        }
        if (!n.qkv.empty()) {
            L.wqkv = tower_direct(p + n.qkv + ".weight", 3 * D, D);
            if (v.qkv_bias) L.bqkv = direct(p + n.qkv + ".bias", 1, 3 * D);
        } else {
            L.wqkv = tower_stacked({p + n.q + ".weight", p + n.k + ".weight", p + n.v + ".weight"}, D, D);
            if (v.qkv_bias) L.bqkv = stacked_bias({p + n.q + ".bias", p + n.k + ".bias", p + n.v + ".bias"}, D);
        }
        if (v.qk_norm) {
            L.q_norm = direct(p + n.q_norm + ".weight", 1, D);
            L.k_norm = direct(p + n.k_norm + ".weight", 1, D);
        }
        L.wo = tower_direct(p + n.out + ".weight", D, D);
        L.bo = direct(p + n.out + ".bias", 1, D);
        L.fc1_w = tower_direct(p + n.fc1 + ".weight", v.intermediate, D);
        L.fc1_b = direct(p + n.fc1 + ".bias", 1, v.intermediate);
        L.fc2_w = tower_direct(p + n.fc2 + ".weight", D, v.intermediate);
        L.fc2_b = direct(p + n.fc2 + ".bias", 1, D);
        if (v.layer_scale) {
            L.ls1 = direct(p + n.ls1, 1, D);
            L.ls2 = direct(p + n.ls2, 1, D);
        }
        layers_.push_back(L);
    }
    const int64_t in = projector_inputs();
    if (!n.proj_norm.empty()) {
        proj_norm_w_ = direct(projector + n.proj_norm + ".weight", 1, in);
        proj_norm_b_ = direct(projector + n.proj_norm + ".bias", 1, in);
    }
    proj1_w_ = direct(projector + n.proj1 + ".weight", v.text_hidden, in);
    proj1_b_ = direct(projector + n.proj1 + ".bias", 1, v.text_hidden);
    proj2_w_ = direct(projector + n.proj2 + ".weight", v.text_hidden, v.text_hidden);
    proj2_b_ = direct(projector + n.proj2 + ".bias", 1, v.text_hidden);
    if (!backend_.weights_stay_on_host()) owned_.clear(), owned_.shrink_to_fit();  // copied to the device
}

void VisionEncoder::ensure_capacity(int64_t tiles) {
    if (tiles <= capacity_) return;
    // The smaller ones go before the larger ones are made.
    for (Buffer* b : {&planes_, &patches_, &patch_out_, &x_, &h_, &qkv_, &attn_, &delta_, &inter_, &layered_, &features_, &hidden_, &out_})
        b->reset();
    const VisionConfig& v = config_;
    const DType act = backend_.compute_dtype();
    const int64_t N = v.patches_per_side() * v.patches_per_side(), R = N + 1, D = v.hidden;
    planes_ = backend_.activation(tiles * v.channels * v.image_size, v.image_size, DType::U8);
    patches_ = backend_.activation(tiles * N, patch_columns(), act);
    patch_out_ = backend_.activation(tiles * N + 1, D, act);  // the class embedding, then the patches
    x_ = backend_.activation(tiles * R, D, DType::F32);  // the residual stream stays fp32
    h_ = backend_.activation(tiles * R, D, act);
    qkv_ = backend_.activation(tiles * R, 3 * D, act);
    attn_ = backend_.activation(tiles * R, D, act);
    delta_ = backend_.activation(tiles * R, D, act);
    inter_ = backend_.activation(tiles * R, v.intermediate, act);
    features_ = backend_.activation(tiles * N, D * int64_t(v.feature_layers.size()), act);
    if (v.feature_layers.size() > 1) layered_ = backend_.activation(tiles * R, D * int64_t(v.feature_layers.size()), act);
    hidden_ = backend_.activation(tiles * v.tokens_per_tile, v.text_hidden, act);
    out_ = backend_.activation(tiles * v.tokens_per_tile, v.text_hidden, act);
    capacity_ = tiles;
}

void VisionEncoder::norm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor out) {
    if (config_.rms_norm) backend_.rms_norm(x, w, float(config_.eps), out);
    else backend_.layer_norm(x, w, &b, float(config_.eps), out);
}

Tensor VisionEncoder::encode(const ImagePixels& px) {
    const VisionConfig& v = config_;
    const int64_t g = v.patches_per_side(), N = g * g, R = N + 1, D = v.hidden, P = v.patch, C = v.channels;
    if (px.tiles <= 0 || px.channels != C || px.height != v.image_size || px.width != v.image_size)
        throw Error("the image is " + std::to_string(px.width) + "x" + std::to_string(px.height) + " but the vision tower takes " +
                    std::to_string(v.image_size) + "x" + std::to_string(v.image_size));
    const int64_t T = px.tiles;
    ensure_capacity(T);

    // The 8-bit pixels go to the backend as they are; there they become normalised patch rows
    // (channel, then kernel row, then column: the convolution weight's order).
    if (px.values.size() != size_t(T * C * v.image_size * v.image_size)) throw Error("the image's pixel values are incomplete");
    Tensor planes = planes_.rows_view(0, T * C * v.image_size);
    backend_.write_u8(planes, px.values);
    const RowOrders& orders = row_orders(T);
    const int64_t tokens = T * v.tokens_per_tile;
    Tensor out = out_.rows_view(0, tokens);
    // The rest is the same work for every image of T tiles: recorded once, replayed after.
    backend_.run_recorded(this, T, [&] {
        Tensor patches = patches_.rows_view(0, T * N), embedded = patch_out_.rows_view(0, T * N + 1);
        backend_.patch_rows(planes, pixel_levels_, P, patches);
        // [class, patches...] per tile plus the position embeddings, in three operations whatever
        // the number of tiles: the class embedding rides along as row 0 of the embedded patches,
        // one gather lays out the tiles, and the position embeddings repeat over them.
        backend_.copy(class_emb_, embedded.rows_view(0, 1));
        backend_.linear(patches, Weight::dense(patch_w_), Epilogue::plain(patch_b_), embedded.rows_view(1, T * N));
        Tensor x = x_.rows_view(0, T * R);
        backend_.gather_rows(embedded, orders.tiles, x);
        backend_.add(x, pos_emb_, nullptr);
        if (v.pre_norm) backend_.layer_norm(x, pre_norm_w_, &pre_norm_b_, float(v.eps), x);

        Tensor h = h_.rows_view(0, T * R), qkv = qkv_.rows_view(0, T * R), attn = attn_.rows_view(0, T * R);
        Tensor delta = delta_.rows_view(0, T * R), inter = inter_.rows_view(0, T * R);
        const auto act = v.quick_gelu ? Backend::Activation::QuickGelu : Backend::Activation::Gelu;
        auto optional = [](const Tensor& t) { return t.empty() ? nullptr : &t; };
        // Each residual add goes with the norm after it (the next layer's first, once there is one).
        if (!layers_.empty()) norm(x, layers_.front().norm1_w, layers_.front().norm1_b, h);
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const Layer& L = layers_[l];
            backend_.linear(h, L.wqkv, Epilogue::plain(L.bqkv), qkv);
            if (v.qk_norm) {
                // InternViT-6B normalises q and k over all heads at once.
                backend_.rms_norm(qkv.cols_view(0, D), L.q_norm, float(v.eps), qkv.cols_view(0, D));
                backend_.rms_norm(qkv.cols_view(D, D), L.k_norm, float(v.eps), qkv.cols_view(D, D));
            }
            backend_.attention_full(qkv, int32_t(v.heads), int32_t(D / v.heads), R, attn);
            backend_.linear(attn, L.wo, Epilogue::plain(L.bo), delta);
            backend_.add_norm(x, delta, v.layer_scale ? &L.ls1 : nullptr, L.norm2_w, optional(L.norm2_b), float(v.eps), v.rms_norm, h);
            backend_.linear(h, L.fc1_w, Epilogue::plain(L.fc1_b), inter);
            backend_.activate(inter, act);
            backend_.linear(inter, L.fc2_w, Epilogue::plain(L.fc2_b), delta);
            if (l + 1 < layers_.size()) {
                const Layer& next = layers_[l + 1];
                backend_.add_norm(x, delta, v.layer_scale ? &L.ls2 : nullptr, next.norm1_w, optional(next.norm1_b), float(v.eps),
                                  v.rms_norm, h);
            } else {
                backend_.add(x, delta, v.layer_scale ? &L.ls2 : nullptr);
            }
            // Several hidden states side by side (LLaVA's vision_feature_layer lists).
            if (!layered_.empty())
                for (std::size_t j = 0; j < v.feature_layers.size(); ++j)
                    if (v.feature_layers[j] == int64_t(l) + 1)
                        backend_.copy(x, layered_.rows_view(0, T * R).cols_view(int64_t(j) * D, D));
        }

        const int64_t in = projector_inputs();
        Tensor features{features_.tensor().data, features_.tensor().dtype, tokens, in, in};
        backend_.gather_rows(layered_.empty() ? x : layered_.rows_view(0, T * R), orders.projector, features);
        // nn.LayerNorm's default eps.
        if (!proj_norm_w_.empty()) backend_.layer_norm(features, proj_norm_w_, &proj_norm_b_, 1e-5f, features);
        Tensor hidden = hidden_.rows_view(0, tokens);
        backend_.linear(features, Weight::dense(proj1_w_), Epilogue::plain(proj1_b_), hidden);
        backend_.activate(hidden, Backend::Activation::Gelu);
        backend_.linear(hidden, Weight::dense(proj2_w_), Epilogue::plain(proj2_b_), out);
    });
    return out;
}

const VisionEncoder::RowOrders& VisionEncoder::row_orders(int64_t T) {
    if (const auto it = row_orders_.find(T); it != row_orders_.end()) return it->second;
    const VisionConfig& v = config_;
    const int64_t g = v.patches_per_side(), N = g * g, R = N + 1;
    // Each tile's rows: the class embedding (row 0 of the embedded patches), then its patches.
    std::vector<int32_t> tiles;
    tiles.reserve(size_t(T * R));
    for (int64_t t = 0; t < T; ++t) {
        tiles.push_back(0);
        for (int64_t i = 0; i < N; ++i) tiles.push_back(int32_t(1 + t * N + i));
    }
    // The patch rows (the class token dropped), in the order the projector reads them.
    std::vector<int32_t> projector;
    projector.reserve(size_t(T * N));
    if (v.kind == ModelKind::Llava) {
        for (int64_t t = 0; t < T; ++t)
            for (int64_t i = 0; i < N; ++i) projector.push_back(int32_t(t * R + 1 + i));
    } else {
        // Pixel shuffle: each output token holds a 2x2 block of patches, top-left, top-right,
        // bottom-left, bottom-right; v1 leaves the output grid transposed.
        const int64_t half = g / 2;
        for (int64_t t = 0; t < T; ++t)
            for (int64_t a = 0; a < half; ++a)
                for (int64_t b = 0; b < half; ++b) {
                    const int64_t r2 = v.shuffle_v2 ? a : b, c2 = v.shuffle_v2 ? b : a;
                    for (int64_t j = 0; j < 2; ++j)
                        for (int64_t k = 0; k < 2; ++k) projector.push_back(int32_t(t * R + 1 + (2 * r2 + j) * g + 2 * c2 + k));
                }
    }
    RowOrders orders{backend_.indices(tiles, T * N + 1), backend_.indices(projector, T * R)};
    return row_orders_.emplace(T, std::move(orders)).first->second;
}

std::unique_ptr<ImageEncoder> make_image_encoder(const std::filesystem::path& dir, const ModelConfig& config, Backend& backend) {
    return std::make_unique<VisionEncoder>(dir, load_vision_config(dir, config, nullptr), backend);
}

ImageEncoderFactory image_encoder_factory(TowerWeights tower) {
    return [tower](const std::filesystem::path& dir, const ModelConfig& config, Backend& backend) -> std::unique_ptr<ImageEncoder> {
        return std::make_unique<VisionEncoder>(dir, load_vision_config(dir, config, nullptr), backend, tower);
    };
}

TowerWeights parse_tower_weights(const std::string& name) {
    if (name == "auto" || name == "16") return TowerWeights::AsStored;
    if (name == "fp8") return TowerWeights::Fp8;
    throw Error("the vision weights must be auto, 16 or fp8, not '" + name + "'");
}

}  // namespace lumen::vision
