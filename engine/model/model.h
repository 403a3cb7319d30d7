#pragma once
// A language model's weights laid out for the backend, and its forward pass, written once for the
// Llama family (Llama, InternLM2, Qwen2) against the Backend interface.
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"
#include "engine/model/model_config.h"
#include "engine/model/weight_formats.h"

namespace lumen {

// Where a family's tensors live in a checkpoint (prefixes differ between plain models and the
// language model inside LLaVA or InternVL, and between transformers versions).
struct WeightNames {
    std::string embed;       // token embedding table
    std::string layer;       // prefix of "layers.N." (e.g. "model.layers.")
    std::string final_norm;
    std::string lm_head;     // empty when tied to the embeddings
};

// The modules of one layer of a family, relative to "<layer prefix>N." (norms without ".weight").
struct LayerNames {
    std::string attn_norm, ffn_norm, o, gate, up, down;
    std::vector<std::string> qkv;  // one packed module (InternLM2) or q, k, v
};
LayerNames layer_names(TextFamily family);

// Finds the tensor names of `config`'s language model in `checkpoint`; throws naming what is missing.
WeightNames resolve_weight_names(const ModelConfig& config, const Checkpoint& checkpoint);

// Checks that every tensor the forward needs is present with the right shape and a float type.
void check_weights(const ModelConfig& config, const Checkpoint& checkpoint);

class Model {
public:
    // `compute` overrides the activation type the backend would take from the weights; `choice`
    // quantizes a 16-bit folder's linear weights at load.
    Model(const std::filesystem::path& dir, Backend& backend, std::optional<DType> compute = std::nullopt,
          const WeightChoice& choice = {});
    // A model of `config`'s shapes with seeded random weights of `dtype` (the linear ones in
    // `choice`'s format), made by the backend (for benchmarks at real shapes without a checkpoint).
    Model(const ModelConfig& config, Backend& backend, DType dtype, uint64_t seed, const WeightChoice& choice = {});
    ~Model();
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    const ModelConfig& config() const { return config_; }
    const TextConfig& text() const { return config_.text; }
    Backend& backend() { return backend_; }
    // Bytes of weights as stored (what the model costs in memory).
    uint64_t weight_bytes() const { return weight_bytes_; }
    // How the linear weights are held, in users' words ("AWQ 4-bit, groups of 128", "16-bit", "8-bit
    // at load"), with the layers a quantization at load had to leave 16-bit.
    std::string weights_description() const;

    // The inputs of each layer's products, for calibration (lumen-cli quantize).
    enum class ProductInput { QKV, O, GateUp, Down };
    using Probe = std::function<void(int64_t layer, ProductInput input, const Tensor& x)>;

    // Runs the batch (its KV blocks must be assigned) and returns the logits of
    // batch.logit_rows, [rows, vocab], valid until the next call. With a probe, the forward runs
    // unrecorded and shows it each product's input as it is made.
    Tensor forward(const BatchLayout& batch, const Probe& probe = {});

private:
    struct Layer {
        Tensor attn_norm, ffn_norm;
        Weight wqkv, wo, w_gate_up, w_down;
        Tensor bqkv, bo, b_gate_up, b_down;  // empty where the model has none
    };
    // Keeps a weight's memory for the model's lifetime and returns its view.
    Tensor keep(Buffer weight);
    Weight keep(Backend::OwnedWeight weight);
    // Quantizes `w` as the choice asks (where it can and it is `quantizable`: the output projection
    // stays 16-bit, as AWQ and GPTQ leave it), keeps its host memory and uploads it.
    Weight upload(HostWeight w, const std::string& name, bool quantizable = true);
    void load_weights(const Checkpoint& checkpoint);
    void random_weights(DType dtype, uint64_t seed);
    void ensure_capacity(int64_t tokens, int64_t logit_rows);

    Backend& backend_;
    ModelConfig config_;
    std::unique_ptr<Checkpoint> checkpoint_;           // the mapped files the weights point into
    std::vector<std::unique_ptr<HostWeight>> host_;      // re-laid weights (fused, quantized) a CPU backend computes from
    Quantization quantization_;                          // as stored
    WeightChoice choice_;
    std::vector<std::string> kept_16_bit_;               // layers the choice could not quantize
    std::vector<Buffer> weights_;                       // the memory of every weight below
    Tensor embed_, final_norm_;
    Weight lm_head_;
    std::vector<Layer> layers_;
    AttentionShape attention_;
    RopeConfig rope_;
    uint64_t weight_bytes_ = 0;

    int64_t capacity_ = 0, logit_capacity_ = 0;
    Buffer x_, h_, qkv_, attn_, delta_, gate_up_, act_, selected_, normed_, logits_;
};

}  // namespace lumen
