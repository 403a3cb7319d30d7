#include "engine/model/model_config.h"

#include <algorithm>
#include <cstdio>

#include "engine/util/error.h"
#include "engine/util/json_file.h"

namespace lumen {
namespace {

using nlohmann::json;

std::string join(const std::vector<std::string>& items) {
    std::string s;
    for (const auto& item : items) s += (s.empty() ? "" : ", ") + item;
    return s;
}

// Far above any real model (the widest today: hidden 16384, intermediate 53248, 126 layers, 128
// heads, 256k vocabulary, 10M positions), low enough that every size derived from them fits in 64
// bits: a layer of 3 * kMaxWidth^2 fp32 weights times kMaxLayers is about 2^54 bytes.
constexpr int64_t kMaxVocab = int64_t(1) << 24;
constexpr int64_t kMaxWidth = int64_t(1) << 20;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxPositions = int64_t(1) << 28;
constexpr double kMaxRopeFactor = 1024.0;
constexpr double kMinRopeTheta = 1.0, kMaxRopeTheta = 1e12;

std::string format_number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

// Typed reads of one JSON object, with messages that name the file and the field.
class Fields {
public:
    Fields(const json& j, std::string where) : j_(j), where_(std::move(where)) {}

    bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

    // An integer in 1..max; the bounds keep every size computed from a config within 64 bits.
    int64_t positive(const char* key, int64_t fallback, int64_t max) const {
        if (!has(key)) return fallback;
        const json& v = j_[key];
        if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(max)) ||
            v.get<int64_t>() <= 0 || v.get<int64_t>() > max)
            throw Error(where_ + ": '" + key + "' must be an integer from 1 to " + std::to_string(max) + " (got " +
                        v.dump() + ")");
        return v.get<int64_t>();
    }
    std::optional<int64_t> optional_int(const char* key) const {
        if (!has(key)) return std::nullopt;
        const json& v = j_[key];
        if (!v.is_number_integer()) throw Error(where_ + ": '" + key + "' must be an integer (got " + v.dump() + ")");
        return v.get<int64_t>();
    }
    // A number in [lo, hi].
    double number(const char* key, double fallback, double lo, double hi) const {
        if (!has(key)) return fallback;
        const json& v = j_[key];
        if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi))
            throw Error(where_ + ": '" + key + "' must be a number from " + format_number(lo) + " to " + format_number(hi) +
                        " (got " + v.dump() + ")");
        return v.get<double>();
    }
    bool boolean(const char* key, bool fallback) const {
        if (!has(key)) return fallback;
        const json& v = j_[key];
        if (!v.is_boolean()) throw Error(where_ + ": '" + key + "' must be true or false (got " + v.dump() + ")");
        return v.get<bool>();
    }
    std::string string(const char* key, const std::string& fallback = {}) const {
        if (!has(key)) return fallback;
        const json& v = j_[key];
        if (!v.is_string()) throw Error(where_ + ": '" + key + "' must be a string (got " + v.dump() + ")");
        return v.get<std::string>();
    }
    std::vector<int64_t> ids(const char* key) const {
        std::vector<int64_t> out;
        if (!has(key)) return out;
        const json& v = j_[key];
        if (v.is_number_integer()) return {v.get<int64_t>()};
        if (!v.is_array()) throw Error(where_ + ": '" + key + "' must be an integer or a list of integers");
        for (const auto& e : v) {
            if (!e.is_number_integer()) throw Error(where_ + ": '" + key + "' must hold integers");
            out.push_back(e.get<int64_t>());
        }
        return out;
    }
    const std::string& where() const { return where_; }

private:
    const json& j_;
    std::string where_;
};

std::optional<DType> parse_torch_dtype(const Fields& f) {
    const std::string name = f.has("dtype") ? f.string("dtype") : f.string("torch_dtype");
    if (name.empty()) return std::nullopt;
    if (name == "float32") return DType::F32;
    if (name == "float16") return DType::F16;
    if (name == "bfloat16") return DType::BF16;
    throw Error(f.where() + ": dtype '" + name + "' is not supported (supported: float32, float16, bfloat16)");
}

RopeScaling parse_rope_scaling(const json& scaling, const std::string& where) {
    RopeScaling out;
    if (scaling.is_null()) return out;
    if (!scaling.is_object()) throw Error(where + ": rope scaling must be an object");
    Fields f(scaling, where + " (rope scaling)");
    const std::string type = f.has("rope_type") ? f.string("rope_type") : f.string("type", "default");
    if (type == "default") return out;
    if (type == "linear") out.type = RopeScaling::Type::Linear;
    else if (type == "dynamic") out.type = RopeScaling::Type::Dynamic;
    else
        throw Error(where + ": rope scaling type '" + type + "' is not supported (supported: linear, dynamic)");
    out.factor = f.number("factor", 1.0, 1.0, kMaxRopeFactor);
    return out;
}

// Defaults are those of each family's configuration class in transformers (or the model's remote
// code), because published configs often leave fields at their defaults.
struct FamilyDefaults {
    int64_t vocab, hidden, intermediate, layers, heads, max_positions;
    double norm_eps;
};

TextConfig parse_text_config(const json& j, const std::string& where, const std::string& fallback_arch) {
    if (!j.is_object()) throw Error(where + ": the language model's configuration is not an object");
    Fields f(j, where);
    TextConfig c;
    std::string arch = fallback_arch;
    if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
        j["architectures"][0].is_string())
        arch = j["architectures"][0].get<std::string>();
    const std::string model_type = f.string("model_type");
    if (arch.empty()) {
        if (model_type == "llama") arch = "LlamaForCausalLM";
        else if (model_type == "qwen2") arch = "Qwen2ForCausalLM";
        else if (model_type == "internlm2") arch = "InternLM2ForCausalLM";
    }
    FamilyDefaults d{};
    if (arch == "LlamaForCausalLM") {
        c.family = TextFamily::Llama;
        d = {32000, 4096, 11008, 32, 32, 2048, 1e-6};
    } else if (arch == "Qwen2ForCausalLM") {
        c.family = TextFamily::Qwen2;
        d = {151936, 4096, 22016, 32, 32, 32768, 1e-6};
    } else if (arch == "InternLM2ForCausalLM") {
        c.family = TextFamily::InternLM2;
        d = {103168, 4096, 11008, 32, 32, 2048, 1e-6};
    } else {
        throw Error(where + ": unsupported language model architecture '" + (arch.empty() ? model_type : arch) +
                    "' (supported: LlamaForCausalLM, InternLM2ForCausalLM, Qwen2ForCausalLM)");
    }
    c.architecture = arch;
    c.vocab_size = f.positive("vocab_size", d.vocab, kMaxVocab);
    c.hidden_size = f.positive("hidden_size", d.hidden, kMaxWidth);
    c.intermediate_size = f.positive("intermediate_size", d.intermediate, kMaxWidth);
    c.num_layers = f.positive("num_hidden_layers", d.layers, kMaxLayers);
    c.num_heads = f.positive("num_attention_heads", d.heads, kMaxHeads);
    c.num_kv_heads = f.positive("num_key_value_heads", c.num_heads, kMaxHeads);
    c.max_position_embeddings = f.positive("max_position_embeddings", d.max_positions, kMaxPositions);
    c.norm_eps = f.number("rms_norm_eps", d.norm_eps, 0.0, 1.0);
    c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
    c.dtype = parse_torch_dtype(f);
    c.bos_token_id = f.optional_int("bos_token_id");
    c.eos_token_ids = f.ids("eos_token_id");
    c.pad_token_id = f.optional_int("pad_token_id");

    if (f.has("head_dim")) {
        c.head_dim = f.positive("head_dim", 0, kMaxHeadDim);
    } else {
        if (c.hidden_size % c.num_heads != 0)
            throw Error(where + ": hidden_size " + std::to_string(c.hidden_size) +
                        " is not a multiple of num_attention_heads " + std::to_string(c.num_heads));
        c.head_dim = c.hidden_size / c.num_heads;
    }
    if (c.head_dim % 2 != 0) throw Error(where + ": head_dim " + std::to_string(c.head_dim) + " is odd; RoPE needs pairs");
    if (c.num_heads % c.num_kv_heads != 0)
        throw Error(where + ": num_attention_heads " + std::to_string(c.num_heads) +
                    " is not a multiple of num_key_value_heads " + std::to_string(c.num_kv_heads));

    const std::string act = f.string("hidden_act", "silu");
    if (act != "silu") throw Error(where + ": hidden_act '" + act + "' is not supported (supported: silu)");

    switch (c.family) {
    case TextFamily::Llama:
        c.qkv_bias = c.o_bias = f.boolean("attention_bias", false);
        c.mlp_bias = f.boolean("mlp_bias", false);
        break;
    case TextFamily::Qwen2:
        c.qkv_bias = true;
        if (f.boolean("use_sliding_window", false))
            throw Error(where + ": sliding-window attention (use_sliding_window) is not supported");
        break;
    case TextFamily::InternLM2:
        c.qkv_bias = c.o_bias = f.boolean("bias", true);
        break;
    }

    // transformers 5 writes rope_parameters (theta and scaling together); older files use
    // rope_theta and rope_scaling.
    if (f.has("rope_parameters")) {
        const json& p = j["rope_parameters"];
        c.rope_scaling = parse_rope_scaling(p, where);
        c.rope_theta = Fields(p, where + " (rope_parameters)")
                           .number("rope_theta", f.number("rope_theta", 10000.0, kMinRopeTheta, kMaxRopeTheta), kMinRopeTheta,
                                   kMaxRopeTheta);
    } else {
        c.rope_theta = f.number("rope_theta", 10000.0, kMinRopeTheta, kMaxRopeTheta);
        if (f.has("rope_scaling")) c.rope_scaling = parse_rope_scaling(j["rope_scaling"], where);
    }
    return c;
}

const json& required_object(const json& j, const char* key, const std::string& where) {
    if (!j.contains(key) || !j[key].is_object())
        throw Error(where + ": has no '" + key + "' object for its language model");
    return j[key];
}

}  // namespace

const char* text_family_name(TextFamily f) {
    switch (f) {
    case TextFamily::Llama: return "llama";
    case TextFamily::InternLM2: return "internlm2";
    case TextFamily::Qwen2: return "qwen2";
    }
    return "?";
}

int64_t TextConfig::parameter_count() const {
    const int64_t q = num_heads * head_dim, kv = num_kv_heads * head_dim;
    int64_t attn = hidden_size * (q + 2 * kv) + q * hidden_size;
    if (qkv_bias) attn += q + 2 * kv;
    if (o_bias) attn += hidden_size;
    int64_t mlp = 3 * hidden_size * intermediate_size;
    if (mlp_bias) mlp += 2 * intermediate_size + hidden_size;
    const int64_t layer = attn + mlp + 2 * hidden_size;
    const int64_t embeddings = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2);
    return num_layers * layer + embeddings + hidden_size;
}

const std::vector<std::string>& supported_architectures() {
    static const std::vector<std::string> archs{"LlamaForCausalLM",
                                                "InternLM2ForCausalLM",
                                                "Qwen2ForCausalLM",
                                                "LlavaForConditionalGeneration",
                                                "InternVLChatModel",
                                                "InternVLForConditionalGeneration"};
    return archs;
}

ModelConfig parse_model_config(const std::string& config_json, const std::string& source,
                               const std::string* generation_config_json) {
    json j = parse_json(config_json, source);
    if (!j.is_object()) throw Error(source + ": not a JSON object");

    ModelConfig m;
    Fields f(j, source);
    m.model_type = f.string("model_type");
    if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
        j["architectures"][0].is_string())
        m.architecture = j["architectures"][0].get<std::string>();
    if (m.architecture.empty()) {
        static const std::vector<std::pair<std::string, std::string>> by_type{
            {"llama", "LlamaForCausalLM"},           {"qwen2", "Qwen2ForCausalLM"},
            {"internlm2", "InternLM2ForCausalLM"},   {"llava", "LlavaForConditionalGeneration"},
            {"internvl_chat", "InternVLChatModel"},   {"internvl", "InternVLForConditionalGeneration"}};
        for (const auto& [type, arch] : by_type)
            if (type == m.model_type) m.architecture = arch;
    }

    const std::string& arch = m.architecture;
    if (arch == "LlamaForCausalLM" || arch == "Qwen2ForCausalLM" || arch == "InternLM2ForCausalLM") {
        m.kind = ModelKind::Text;
        m.text = parse_text_config(j, source, arch);
    } else if (arch == "LlavaForConditionalGeneration") {
        m.kind = ModelKind::Llava;
        // LlavaConfig builds a LlamaConfig when text_config is absent or has no model_type.
        const json text = j.contains("text_config") && j["text_config"].is_object() ? j["text_config"] : json::object();
        m.text = parse_text_config(text, source + " text_config",
                                   text.contains("model_type") ? std::string() : std::string("LlamaForCausalLM"));
    } else if (arch == "InternVLChatModel") {
        m.kind = ModelKind::InternVLChat;
        m.text = parse_text_config(required_object(j, "llm_config", source), source + " llm_config", "");
        m.template_name = f.string("template");
    } else if (arch == "InternVLForConditionalGeneration") {
        m.kind = ModelKind::InternVLHf;
        m.text = parse_text_config(required_object(j, "text_config", source), source + " text_config", "");
    } else {
        const std::string got = arch.empty() ? (m.model_type.empty() ? std::string("none given") : m.model_type) : arch;
        throw Error(source + ": unsupported architecture '" + got + "' (supported: " +
                    join(supported_architectures()) + ")");
    }
    if (m.kind != ModelKind::Text) {
        // The wrappers keep dtype and special ids at the top level as well.
        if (!m.text.dtype) m.text.dtype = parse_torch_dtype(f);
        if (m.text.eos_token_ids.empty()) m.text.eos_token_ids = f.ids("eos_token_id");
        if (j.contains("vision_config") && j["vision_config"].is_object()) {
            m.has_vision = true;
            m.vision_model_type = Fields(j["vision_config"], source + " vision_config").string("model_type");
        }
        if (j.contains("tie_word_embeddings") && m.kind == ModelKind::InternVLHf)
            m.text.tie_word_embeddings = f.boolean("tie_word_embeddings", m.text.tie_word_embeddings);
    }

    if (generation_config_json) {
        const std::string where = (std::filesystem::path(source).parent_path() / "generation_config.json").string();
        const json g = parse_json(*generation_config_json, where);
        if (g.is_object()) {
            for (int64_t id : Fields(g, where).ids("eos_token_id"))
                if (std::find(m.text.eos_token_ids.begin(), m.text.eos_token_ids.end(), id) == m.text.eos_token_ids.end())
                    m.text.eos_token_ids.push_back(id);
        }
    }
    m.raw = std::move(j);
    return m;
}

ModelConfig load_model_config(const std::filesystem::path& dir) {
    require_folder(dir);
    const auto config = read_text_file(dir / "config.json", kConfigFile);
    if (!config) throw Error(dir.string() + ": no config.json (is this a Hugging Face model folder?)");
    const auto generation = read_text_file(dir / "generation_config.json", kConfigFile);
    return parse_model_config(*config, (dir / "config.json").string(), generation ? &*generation : nullptr);
}

}  // namespace lumen
