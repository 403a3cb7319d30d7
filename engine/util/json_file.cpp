#include "engine/util/json_file.h"

#include <set>
#include <vector>

#include "engine/util/error.h"

namespace lumen {
namespace {

// The deepest nesting of arrays and objects, counting only brackets outside strings; stops
// counting once past `limit`.
int nesting_depth(std::string_view text, int limit) {
    int depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
            if (deepest > limit) return deepest;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}

// nlohmann's messages start with "[json.exception.parse_error.101] parse error at line 1, ...".
std::string without_exception_tag(const std::string& what) {
    const auto end = what.find("] ");
    return what.rfind("[json.exception", 0) == 0 && end != std::string::npos ? what.substr(end + 2) : what;
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& source, DuplicateKeys duplicates) {
    const std::string prefix = source.empty() ? std::string() : source + ": ";
    if (nesting_depth(text, kMaxJsonDepth) > kMaxJsonDepth)
        throw Error(prefix + "nested deeper than " + std::to_string(kMaxJsonDepth) +
                    " levels, which no real file needs; the file is damaged or hostile");
    try {
        if (duplicates == DuplicateKeys::LastWins) return nlohmann::json::parse(text);
        std::vector<std::set<std::string>> keys;  // of each object being parsed
        using Event = nlohmann::json::parse_event_t;
        return nlohmann::json::parse(text, [&](int, Event event, nlohmann::json& parsed) {
            if (event == Event::object_start) keys.emplace_back();
            else if (event == Event::object_end) keys.pop_back();
            else if (event == Event::key && !keys.back().insert(parsed.get<std::string>()).second)
                throw Error(prefix + "names '" + parsed.get<std::string>() + "' twice");
            return true;
        });
    } catch (const nlohmann::json::exception& e) {
        throw Error(prefix + "not valid JSON (" + without_exception_tag(e.what()) + ")");
    }
}

std::optional<nlohmann::json> read_json_file(const std::filesystem::path& path, const FileKind& kind) {
    const auto text = read_text_file(path, kind);
    if (!text) return std::nullopt;
    return parse_json(*text, path.string());
}

}  // namespace lumen
