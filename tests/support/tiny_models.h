#pragma once
// The tiny seeded-random checkpoints of tests/data/tiny_models.json, built byte for byte as
// tests/reference/tiny_models.py builds them for transformers, so the goldens apply without
// committing the checkpoints.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lumen::test {

struct TinyModel {
    std::string name;       // "llama", "internlm2", "qwen2"
    std::string tokenizer;  // folder under ../shared/data/tokenizers
    nlohmann::json config;
};

struct TinySpec {
    uint64_t seed = 0;
    std::vector<std::string> prompts;
    int new_tokens = 0;
    std::vector<std::string> dtypes;  // "bfloat16", "float16"
    std::vector<TinyModel> models;
};

TinySpec load_tiny_spec();

// Writes config.json, model.safetensors and the tokenizer files into `dir`; returns the checksum
// of every tensor (see tiny_models.py).
std::map<std::string, uint64_t> build_tiny_model(const TinySpec& spec, const TinyModel& model, const std::string& dtype,
                                                 const std::filesystem::path& tokenizers, const std::filesystem::path& dir);

// The tiny model in float16 with its linear weights replaced by the packed tensors of a case of
// tests/data/goldens/quantized/quantized_goldens.json (`packed`: its safetensors file) and the
// case's quantization_config in config.json.
void build_quantized_tiny_model(const TinySpec& spec, const TinyModel& model, const nlohmann::json& quantized_case,
                                const std::filesystem::path& packed, const std::filesystem::path& tokenizers,
                                const std::filesystem::path& dir);

// The tiny vision-language checkpoints of tests/data/tiny_vlms.json (tests/reference/tiny_vlms.py).
struct TinyVlmCase {
    nlohmann::json messages;            // [{"role", "text", "images"}]
    std::vector<std::string> images;    // files under ../shared/data/images
    std::string prompt;                 // the rendered prompt
};
struct TinyVlm {
    std::string name;
    std::string layout;  // the checkpoint's layout: "llava", "internvl_chat" or "internvl_hf" (the name unless given)
    std::string tokenizer;
    nlohmann::json config, files, added_tokens;
    std::vector<TinyVlmCase> cases;
};
struct TinyVlmSpec {
    uint64_t seed = 0;
    int new_tokens = 0;
    std::string dtype;
    std::vector<TinyVlm> models;
    nlohmann::json photos;
};

TinyVlmSpec load_tiny_vlm_spec();
std::map<std::string, uint64_t> build_tiny_vlm(const TinyVlmSpec& spec, const TinyVlm& model, const std::filesystem::path& tokenizers,
                                               const std::filesystem::path& dir);

}  // namespace lumen::test
