#pragma once
// config.json (and generation_config.json) normalised into one description of the language model,
// whatever wrapper it sits in: plain causal LMs, LLaVA's text_config, InternVL's llm_config.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/backend/rope.h"
#include "engine/util/dtype.h"

namespace lumen {

// The decoder families share one forward; they differ in weight names, biases and packing.
enum class TextFamily { Llama, InternLM2, Qwen2 };
const char* text_family_name(TextFamily f);

struct TextConfig {
    std::string architecture;  // e.g. "InternLM2ForCausalLM"
    TextFamily family = TextFamily::Llama;
    int64_t hidden_size = 0;
    int64_t intermediate_size = 0;
    int64_t num_layers = 0;
    int64_t num_heads = 0;
    int64_t num_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t vocab_size = 0;
    int64_t max_position_embeddings = 0;
    double rope_theta = 10000.0;
    RopeScaling rope_scaling;
    double norm_eps = 1e-6;
    bool qkv_bias = false;  // Qwen2 always; Llama's attention_bias; InternLM2's bias
    bool o_bias = false;    // Llama's attention_bias; InternLM2's bias
    bool mlp_bias = false;  // Llama's mlp_bias
    bool tie_word_embeddings = false;
    std::optional<DType> dtype;  // as declared; the checkpoint may differ
    std::optional<int64_t> bos_token_id;
    std::vector<int64_t> eos_token_ids;  // config.json's, then generation_config.json's
    std::optional<int64_t> pad_token_id;

    // Parameters of the language model computed from the shapes (embeddings counted once when tied).
    int64_t parameter_count() const;
};

enum class ModelKind { Text, Llava, InternVLChat, InternVLHf };

struct ModelConfig {
    std::string architecture;  // the top-level one, e.g. "LlavaForConditionalGeneration"
    std::string model_type;
    ModelKind kind = ModelKind::Text;
    TextConfig text;
    bool has_vision = false;
    std::string vision_model_type;  // e.g. "clip_vision_model", "intern_vit_6b"
    std::string template_name;      // InternVL's "template" field
    nlohmann::json raw;             // the whole config.json, for the vision side

    bool is_vision_language() const { return kind != ModelKind::Text; }
};

// The architectures Lumen loads, for messages and the model picker.
const std::vector<std::string>& supported_architectures();

// Parses config.json text (and optional generation_config.json text); `source` names it in errors.
ModelConfig parse_model_config(const std::string& config_json, const std::string& source,
                               const std::string* generation_config_json = nullptr);

// Reads DIR/config.json and DIR/generation_config.json if present.
ModelConfig load_model_config(const std::filesystem::path& dir);

}  // namespace lumen
