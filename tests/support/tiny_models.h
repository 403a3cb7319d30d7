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

}  // namespace lumen::test
