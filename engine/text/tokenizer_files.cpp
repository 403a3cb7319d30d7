#include "engine/text/tokenizer_files.h"

#include "engine/util/error.h"
#include "engine/util/json_file.h"

namespace lumen {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::optional<json> read_json(const fs::path& path) { return read_json_file(path, kConfigFile); }

// Token ids index tables as long as the vocabulary, so an id is bounded before it sizes one.
int32_t token_id(const json& v, const fs::path& file, const std::string& token) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= kMaxTokenId)  // above 2^63: negative here
        throw Error(file.string() + ": the id of '" + token + "' must be an integer from 0 to " +
                    std::to_string(kMaxTokenId - 1) + " (got " + v.dump() + ")");
    return int32_t(v.get<int64_t>());
}

// Special tokens appear as strings or as AddedToken objects ({"content": ...}).
std::string token_string(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return {};
}

bool bool_field(const json& o, const char* key, bool fallback) {
    return o.contains(key) && o[key].is_boolean() ? o[key].get<bool>() : fallback;
}

}  // namespace

std::string TokenizerFiles::special_token(const char* key) const {
    return config.contains(key) ? token_string(config[key]) : std::string();
}

std::vector<std::string> TokenizerFiles::special_token_strings() const {
    std::vector<std::string> out;
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"})
        if (auto s = special_token(key); !s.empty()) out.push_back(std::move(s));
    for (const char* key : {"additional_special_tokens", "extra_special_tokens"}) {
        if (!config.contains(key)) continue;
        const json& list = config[key];
        if (list.is_array()) {
            for (const auto& v : list)
                if (auto s = token_string(v); !s.empty()) out.push_back(std::move(s));
        } else if (list.is_object()) {
            for (const auto& [name, v] : list.items())
                if (auto s = token_string(v); !s.empty()) out.push_back(std::move(s));
        }
    }
    return out;
}

std::optional<bool> TokenizerFiles::flag(const char* key) const {
    if (config.contains(key) && config[key].is_boolean()) return config[key].get<bool>();
    return std::nullopt;
}

TokenizerFiles TokenizerFiles::read(const fs::path& dir) {
    TokenizerFiles f;
    f.dir = dir;
    if (auto map = read_json(dir / "special_tokens_map.json"); map && map->is_object()) f.config = *map;
    if (auto config = read_json(dir / "tokenizer_config.json")) {
        if (!config->is_object()) throw Error((dir / "tokenizer_config.json").string() + ": not a JSON object");
        for (const auto& [k, v] : config->items()) f.config[k] = v;
    }
    if (f.config.contains("tokenizer_class") && f.config["tokenizer_class"].is_string()) {
        f.tokenizer_class = f.config["tokenizer_class"].get<std::string>();
        if (f.tokenizer_class.size() > 4 && f.tokenizer_class.ends_with("Fast"))
            f.tokenizer_class.resize(f.tokenizer_class.size() - 4);
    }
    if (auto model = read_json(dir / "config.json"); model && model->is_object() && model->contains("model_type") &&
                                                       (*model)["model_type"].is_string())
        f.model_type = (*model)["model_type"].get<std::string>();

    if (f.config.contains("added_tokens_decoder") && f.config["added_tokens_decoder"].is_object()) {
        for (const auto& [id_text, v] : f.config["added_tokens_decoder"].items()) {
            AddedToken t;
            const fs::path file = dir / "tokenizer_config.json";
            json id;
            try {
                id = json::parse(id_text);
            } catch (const json::exception&) {
            }
            if (!id.is_number_integer())
                throw Error(file.string() + ": added_tokens_decoder key '" + id_text + "' is not a token id");
            t.id = token_id(id, file, id_text);
            t.content = token_string(v);
            t.special = bool_field(v, "special", false);
            t.lstrip = bool_field(v, "lstrip", false);
            t.rstrip = bool_field(v, "rstrip", false);
            t.normalized = bool_field(v, "normalized", !t.special);
            t.single_word = bool_field(v, "single_word", false);
            if (!t.content.empty()) f.added_tokens.push_back(std::move(t));
        }
    }
    if (auto added = read_json(dir / "added_tokens.json"); added && added->is_object()) {
        for (const auto& [content, id] : added->items()) {
            const int32_t added_id = token_id(id, dir / "added_tokens.json", content);
            bool known = false;
            for (const auto& t : f.added_tokens) known = known || t.content == content;
            if (!known) f.added_tokens.push_back({added_id, content, false, false, false, true, false});
        }
    }
    return f;
}

}  // namespace lumen
