#include "tests/support/tiny_models.h"

#include <cstring>
#include <functional>
#include <set>
#include <stdexcept>

#include "engine/model/safetensors.h"
#include "engine/util/dtype.h"
#include "engine/util/text_file.h"
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

using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// The tensors of `shapes` in `stored` type, with their checksums (see tiny_models.py).
std::map<std::string, uint64_t> write_tensors(uint64_t seed, const Shapes& shapes, DType stored, const fs::path& file) {
    std::vector<TensorSpec> tensors;
    std::map<std::string, uint64_t> checksums;
    for (const auto& [name, shape] : shapes) {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        std::string bytes(std::size_t(n) * 2, '\0');
        const uint64_t base = seed ^ fnv1a64(name);
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
    write_file(file, safetensors_bytes(tensors));
    return checksums;
}

// A language model's tensors renamed into a vision-language checkpoint.
void append_text(Shapes& out, const json& text_config, const std::string& architecture, const std::function<std::string(const std::string&)>& rename) {
    json c = text_config;
    c["architectures"] = {architecture};
    for (auto& [name, shape] : tensor_shapes(c)) out.push_back({rename(name), shape});
}

Shapes vlm_shapes(const TinyVlm& m) {
    const json& c = m.config;
    const json& v = c["vision_config"];
    const int64_t d = v["hidden_size"], inter = v["intermediate_size"], layers = v["num_hidden_layers"];
    const int64_t p = v["patch_size"].is_array() ? v["patch_size"][0].get<int64_t>() : v["patch_size"].get<int64_t>();
    const int64_t size = v["image_size"].is_array() ? v["image_size"][0].get<int64_t>() : v["image_size"].get<int64_t>();
    const int64_t n = (size / p) * (size / p);
    Shapes s;
    auto add = [&](const std::string& name, std::vector<int64_t> shape) { s.push_back({name, std::move(shape)}); };
    if (m.layout == "llava") {
        const int64_t h = c["text_config"]["hidden_size"];
        const std::string t = "vision_tower.vision_model.";
        add(t + "embeddings.class_embedding", {d});
        add(t + "embeddings.patch_embedding.weight", {d, 3, p, p});
        add(t + "embeddings.position_embedding.weight", {n + 1, d});
        add(t + "pre_layrnorm.weight", {d});
        add(t + "pre_layrnorm.bias", {d});
        for (int64_t l = 0; l < layers; ++l) {
            const std::string q = t + "encoder.layers." + std::to_string(l) + ".";
            for (const char* norm : {"layer_norm1", "layer_norm2"}) {
                add(q + norm + ".weight", {d});
                add(q + norm + ".bias", {d});
            }
            for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
                add(q + "self_attn." + proj + ".weight", {d, d});
                add(q + "self_attn." + proj + ".bias", {d});
            }
            add(q + "mlp.fc1.weight", {inter, d});
            add(q + "mlp.fc1.bias", {inter});
            add(q + "mlp.fc2.weight", {d, inter});
            add(q + "mlp.fc2.bias", {d});
        }
        add(t + "post_layernorm.weight", {d});
        add(t + "post_layernorm.bias", {d});
        // A list of vision_feature_layer values puts that many hidden states side by side.
        const json& fl = c["vision_feature_layer"];
        add("multi_modal_projector.linear_1.weight", {h, d * int64_t(fl.is_array() ? fl.size() : 1)});
        add("multi_modal_projector.linear_1.bias", {h});
        add("multi_modal_projector.linear_2.weight", {h, h});
        add("multi_modal_projector.linear_2.bias", {h});
        append_text(s, c["text_config"], "LlamaForCausalLM", [](const std::string& x) { return "language_model." + x; });
    } else if (m.layout == "internvl_chat") {
        const int64_t h = c["llm_config"]["hidden_size"];
        const std::string t = "vision_model.";
        add(t + "embeddings.class_embedding", {1, 1, d});
        add(t + "embeddings.patch_embedding.weight", {d, 3, p, p});
        add(t + "embeddings.patch_embedding.bias", {d});
        add(t + "embeddings.position_embedding", {1, n + 1, d});
        for (int64_t l = 0; l < layers; ++l) {
            const std::string q = t + "encoder.layers." + std::to_string(l) + ".";
            for (const char* norm : {"norm1", "norm2"}) {
                add(q + norm + ".weight", {d});
                add(q + norm + ".bias", {d});
            }
            add(q + "attn.qkv.weight", {3 * d, d});
            add(q + "attn.qkv.bias", {3 * d});
            add(q + "attn.proj.weight", {d, d});
            add(q + "attn.proj.bias", {d});
            add(q + "ls1", {d});
            add(q + "mlp.fc1.weight", {inter, d});
            add(q + "mlp.fc1.bias", {inter});
            add(q + "mlp.fc2.weight", {d, inter});
            add(q + "mlp.fc2.bias", {d});
            add(q + "ls2", {d});
        }
        add("mlp1.0.weight", {4 * d});
        add("mlp1.0.bias", {4 * d});
        add("mlp1.1.weight", {h, 4 * d});
        add("mlp1.1.bias", {h});
        add("mlp1.3.weight", {h, h});
        add("mlp1.3.bias", {h});
        append_text(s, c["llm_config"], "InternLM2ForCausalLM", [](const std::string& x) { return "language_model." + x; });
    } else if (m.layout == "internvl_hf") {
        const int64_t h = c["text_config"]["hidden_size"];
        const std::string t = "model.vision_tower.";
        const bool rms = v.value("norm_type", "layer_norm") == "rms_norm";
        add(t + "embeddings.cls_token", {1, 1, d});
        add(t + "embeddings.position_embeddings", {1, n + 1, d});
        add(t + "embeddings.patch_embeddings.projection.weight", {d, 3, p, p});
        add(t + "embeddings.patch_embeddings.projection.bias", {d});
        for (int64_t l = 0; l < layers; ++l) {
            const std::string q = t + "encoder.layer." + std::to_string(l) + ".";
            for (const char* norm : {"layernorm_before", "layernorm_after"}) {
                add(q + norm + ".weight", {d});
                if (!rms) add(q + norm + ".bias", {d});
            }
            for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
                add(q + "attention." + proj + ".weight", {d, d});
                if (v.value("attention_bias", false)) add(q + "attention." + proj + ".bias", {d});
            }
            if (v.value("use_qk_norm", false)) {
                add(q + "attention.q_norm.weight", {d});
                add(q + "attention.k_norm.weight", {d});
            }
            add(q + "attention.projection_layer.weight", {d, d});
            add(q + "attention.projection_layer.bias", {d});
            add(q + "lambda_1", {d});
            add(q + "mlp.fc1.weight", {inter, d});
            add(q + "mlp.fc1.bias", {inter});
            add(q + "mlp.fc2.weight", {d, inter});
            add(q + "mlp.fc2.bias", {d});
            add(q + "lambda_2", {d});
        }
        const std::string mp = "model.multi_modal_projector.";
        add(mp + "layer_norm.weight", {4 * d});
        add(mp + "layer_norm.bias", {4 * d});
        add(mp + "linear_1.weight", {h, 4 * d});
        add(mp + "linear_1.bias", {h});
        add(mp + "linear_2.weight", {h, h});
        add(mp + "linear_2.bias", {h});
        append_text(s, c["text_config"], "Qwen2ForCausalLM",
                    [](const std::string& x) { return x == "lm_head.weight" ? x : "model.language_model." + x.substr(6); });
    } else {
        throw std::runtime_error("unknown tiny VLM " + m.name);
    }
    return s;
}

}  // namespace

TinySpec load_tiny_spec() {
    const json j = json::parse(*read_test_file(fs::path(LUMEN_SOURCE_DIR) / "tests/data/tiny_models.json"));
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

    return write_tensors(spec.seed, tensor_shapes(config), dtype == "bfloat16" ? DType::BF16 : DType::F16, dir / "model.safetensors");
}

TinyVlmSpec load_tiny_vlm_spec() {
    const json j = json::parse(*read_test_file(fs::path(LUMEN_SOURCE_DIR) / "tests/data/tiny_vlms.json"));
    TinyVlmSpec spec;
    spec.seed = j["seed"];
    spec.new_tokens = j["new_tokens"];
    spec.dtype = j["dtype"];
    spec.photos = j["photos"];
    for (const auto& m : j["models"]) {
        TinyVlm vlm{m["name"], m.value("layout", m["name"].get<std::string>()), m["tokenizer"], m["config"],
                    m.value("files", json::object()), m.value("added_tokens", json::object()), {}};
        for (const auto& c : m["cases"]) vlm.cases.push_back({c["messages"], c["images"].get<std::vector<std::string>>(), c["prompt"]});
        spec.models.push_back(std::move(vlm));
    }
    return spec;
}

std::map<std::string, uint64_t> build_tiny_vlm(const TinyVlmSpec& spec, const TinyVlm& model, const fs::path& tokenizers,
                                               const fs::path& dir) {
    fs::create_directories(dir);
    json config = model.config;
    config["torch_dtype"] = spec.dtype;
    write_file(dir / "config.json", config.dump(1));
    for (const auto& [name, content] : model.files.items()) write_file(dir / name, content.dump(1));
    for (const auto& f : fs::directory_iterator(tokenizers / model.tokenizer))
        fs::copy_file(f.path(), dir / f.path().filename(), fs::copy_options::overwrite_existing);
    if (!model.added_tokens.empty()) {
        // InternVL's image tokens, declared as its tokenizer_config.json declares them.
        json tc = json::parse(*read_test_file(dir / "tokenizer_config.json"));
        for (const auto& [id, token] : model.added_tokens.items())
            tc["added_tokens_decoder"][id] = {{"content", token}, {"lstrip", false}, {"normalized", false},
                                              {"rstrip", false},   {"single_word", false}, {"special", true}};
        fs::remove(dir / "tokenizer_config.json");
        write_file(dir / "tokenizer_config.json", tc.dump(1));
    }
    return write_tensors(spec.seed, vlm_shapes(model), spec.dtype == "bfloat16" ? DType::BF16 : DType::F16, dir / "model.safetensors");
}

}  // namespace lumen::test

namespace lumen::test {

void build_quantized_tiny_model(const TinySpec& spec, const TinyModel& model, const json& quantized_case, const fs::path& packed,
                                const fs::path& tokenizers, const fs::path& dir) {
    build_tiny_model(spec, model, "float16", tokenizers, dir);
    json config = json::parse(*read_test_file(dir / "config.json"));
    config["quantization_config"] = quantized_case["quantization_config"];
    write_file(dir / "config.json", config.dump(1));
    std::vector<TensorSpec> tensors;
    {
        std::set<std::string> replaced;
        for (const auto& m : quantized_case["modules"]) replaced.insert(m.get<std::string>() + ".weight");
        const SafetensorsFile base(dir / "model.safetensors"), quantized(packed);
        // The base's 16-bit weights of the quantized modules give way; FP8 checkpoints keep their
        // codes under the same name.
        for (const SafetensorsFile* f : {&base, &quantized})
            for (const TensorInfo& t : f->tensors())
                if (f == &quantized || !replaced.count(t.name))
                    tensors.push_back({t.name, t.dtype, t.shape, std::string(reinterpret_cast<const char*>(t.data.data()), t.data.size())});
    }
    write_file(dir / "model.safetensors", safetensors_bytes(tensors));
}

}  // namespace lumen::test
