#include "tests/support/tiny_models.h"

#include <cstring>

#include "engine/dtype.h"
#include "engine/text_file.h"
#include "tests/support/test_support.h"

namespace lumen::test {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

uint64_t fnv1a64(const std::string& s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
    return h;
}

uint64_t splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float value(uint64_t base, uint64_t i, const std::string& name) {
    const double u = double(splitmix64(base ^ i) >> 40) / double(1 << 24);
    double v;
    if (name.ends_with("norm.weight")) v = 1.0 + (u - 0.5) * 0.5;
    else if (name.ends_with(".bias")) v = (u - 0.5) * 0.25;
    else if (name.find("embed") != std::string::npos || name == "lm_head.weight" || name == "output.weight") v = u - 0.5;
    else v = (u - 0.5) * 0.5;
    return float(v);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_shapes(const json& c) {
    const std::string arch = c["architectures"][0];
    const int64_t h = c["hidden_size"], inter = c["intermediate_size"], vocab = c["vocab_size"];
    const int64_t heads = c["num_attention_heads"], kv = c["num_key_value_heads"], d = h / heads;
    const int64_t layers = c["num_hidden_layers"];
    std::vector<std::pair<std::string, std::vector<int64_t>>> s;
    if (arch == "InternLM2ForCausalLM") {
        const bool bias = c.value("bias", true);
        s.push_back({"model.tok_embeddings.weight", {vocab, h}});
        for (int64_t l = 0; l < layers; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            s.push_back({p + "attention_norm.weight", {h}});
            s.push_back({p + "attention.wqkv.weight", {(heads + 2 * kv) * d, h}});
            s.push_back({p + "attention.wo.weight", {h, heads * d}});
            if (bias) {
                s.push_back({p + "attention.wqkv.bias", {(heads + 2 * kv) * d}});
                s.push_back({p + "attention.wo.bias", {h}});
            }
            s.push_back({p + "ffn_norm.weight", {h}});
            s.push_back({p + "feed_forward.w1.weight", {inter, h}});
            s.push_back({p + "feed_forward.w3.weight", {inter, h}});
            s.push_back({p + "feed_forward.w2.weight", {h, inter}});
        }
        s.push_back({"model.norm.weight", {h}});
        s.push_back({"output.weight", {vocab, h}});
        return s;
    }
    const bool qwen = arch == "Qwen2ForCausalLM";
    const bool attn_bias = c.value("attention_bias", false);
    s.push_back({"model.embed_tokens.weight", {vocab, h}});
    for (int64_t l = 0; l < layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        s.push_back({p + "input_layernorm.weight", {h}});
        for (const auto& [proj, rows] : {std::pair<std::string, int64_t>{"q_proj", heads * d}, {"k_proj", kv * d}, {"v_proj", kv * d}}) {
            s.push_back({p + "self_attn." + proj + ".weight", {rows, h}});
            if (qwen || attn_bias) s.push_back({p + "self_attn." + proj + ".bias", {rows}});
        }
        s.push_back({p + "self_attn.o_proj.weight", {h, heads * d}});
        if (attn_bias) s.push_back({p + "self_attn.o_proj.bias", {h}});
        s.push_back({p + "post_attention_layernorm.weight", {h}});
        s.push_back({p + "mlp.gate_proj.weight", {inter, h}});
        s.push_back({p + "mlp.up_proj.weight", {inter, h}});
        s.push_back({p + "mlp.down_proj.weight", {h, inter}});
    }
    s.push_back({"model.norm.weight", {h}});
    if (!c.value("tie_word_embeddings", false)) s.push_back({"lm_head.weight", {vocab, h}});
    return s;
}

}  // namespace

TinySpec load_tiny_spec() {
    const json j = json::parse(*read_text_file(fs::path(LUMEN_SOURCE_DIR) / "tests/data/tiny_models.json"));
    TinySpec spec;
    spec.seed = j["seed"];
    spec.prompts = j["prompts"].get<std::vector<std::string>>();
    spec.new_tokens = j["new_tokens"];
    spec.dtypes = j["dtypes"].get<std::vector<std::string>>();
    for (const auto& m : j["models"]) spec.models.push_back({m["name"], m["tokenizer"], m["config"]});
    return spec;
}

std::map<std::string, uint64_t> build_tiny_model(const TinySpec& spec, const TinyModel& model, const std::string& dtype,
                                                 const fs::path& tokenizers, const fs::path& dir) {
    fs::create_directories(dir);
    json config = model.config;
    config["torch_dtype"] = dtype;
    write_file(dir / "config.json", config.dump(1));
    for (const auto& f : fs::directory_iterator(tokenizers / model.tokenizer))
        fs::copy_file(f.path(), dir / f.path().filename(), fs::copy_options::overwrite_existing);

    const DType stored = dtype == "bfloat16" ? DType::BF16 : DType::F16;
    std::vector<TensorSpec> tensors;
    std::map<std::string, uint64_t> checksums;
    for (const auto& [name, shape] : tensor_shapes(config)) {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        std::string bytes(std::size_t(n) * 2, '\0');
        const uint64_t base = spec.seed ^ fnv1a64(name);
        uint64_t sum = 0;
        for (int64_t i = 0; i < n; ++i) {
            const float f = value(base, uint64_t(i), name);
            const uint16_t w = stored == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f);
            std::memcpy(bytes.data() + 2 * i, &w, 2);
            sum += uint64_t(w) * splitmix64(uint64_t(i));
        }
        checksums[name] = sum;
        tensors.push_back({name, stored, shape, std::move(bytes)});
    }
    write_file(dir / "model.safetensors", safetensors_bytes(tensors));
    return checksums;
}

}  // namespace lumen::test
