#pragma once
// Every JSON file Lumen reads is parsed here: nesting is bounded before parsing (deep nesting is
// how a small file overflows the stack of whatever walks the tree), and parse errors name the file.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "engine/util/text_file.h"

namespace lumen {

// Real configs and tokenizers nest at most 8 deep.
inline constexpr int kMaxJsonDepth = 64;

// Whether an object may name a key twice. JSON allows it (the last one wins, as in Python), but
// in a tensor table a repeated name means one of two tensors would be silently ignored.
enum class DuplicateKeys { LastWins, Refused };

// Throws lumen::Error "<source>: not valid JSON (...)" or "<source>: nested deeper than ..."
// (without the "<source>: " when `source` is empty: the caller names the file itself).
nlohmann::json parse_json(std::string_view text, const std::string& source,
                          DuplicateKeys duplicates = DuplicateKeys::LastWins);

// nullopt when the file does not exist; otherwise read as read_text_file() and parsed as above.
std::optional<nlohmann::json> read_json_file(const std::filesystem::path& path, const FileKind& kind);

}  // namespace lumen
