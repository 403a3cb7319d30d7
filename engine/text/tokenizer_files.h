#pragma once
// The configuration files that sit beside a tokenizer (tokenizer_config.json,
// special_tokens_map.json, added_tokens.json) and the model type from config.json, read once.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/text/added_vocabulary.h"

namespace lumen {

// Token ids at or above this are refused wherever a file gives one (the largest real vocabulary
// has 262,144 tokens); a table indexed by id is never sized by a stranger's number.
inline constexpr int64_t kMaxTokenId = int64_t(1) << 24;

struct TokenizerFiles {
    std::filesystem::path dir;
    nlohmann::json config = nlohmann::json::object();  // tokenizer_config.json merged over special_tokens_map.json
    std::string tokenizer_class;  // without a trailing "Fast"
    std::string model_type;       // from config.json ("" without one)
    std::vector<AddedToken> added_tokens;  // added_tokens_decoder, then added_tokens.json

    // A special token named in the config ("bos_token", ...), as a string; "" when absent or null.
    std::string special_token(const char* key) const;
    // Every special-token string the config names (bos/eos/unk/pad/sep/cls/mask and the additional ones).
    std::vector<std::string> special_token_strings() const;
    std::optional<bool> flag(const char* key) const;

    static TokenizerFiles read(const std::filesystem::path& dir);
};

}  // namespace lumen
