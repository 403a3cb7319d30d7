#include "engine/text/token_decoder.h"

#include "engine/util/error.h"
#include "engine/text/regex.h"
#include "engine/text/unicode.h"

namespace lumen {
namespace {

using nlohmann::json;

const std::string kMetaspace = "\xe2\x96\x81";  // U+2581, sentencepiece's visible space

class ByteLevelDecoder final : public TokenDecoder {
public:
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        std::string bytes;
        for (const auto& t : tokens) {
            std::string mapped;
            bool all_mapped = true;
            for (std::size_t i = 0; i < t.size();) {
                const int b = unicode::unicode_to_byte(unicode::next_code_point(t, i));
                if (b < 0) {
                    all_mapped = false;
                    break;
                }
                mapped += char(b);
            }
            bytes += all_mapped ? mapped : t;  // added tokens with unmapped characters pass as they are
        }
        return {unicode::to_valid_utf8(bytes)};
    }
};

class MetaspaceDecoder final : public TokenDecoder {
public:
    MetaspaceDecoder(std::string replacement, bool strip_first) : replacement_(std::move(replacement)), strip_first_(strip_first) {}
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            std::string out;
            const std::string& t = tokens[i];
            for (std::size_t p = 0; p < t.size();) {
                if (t.compare(p, replacement_.size(), replacement_) == 0) {
                    if (!(i == 0 && strip_first_)) out += ' ';
                    p += replacement_.size();
                } else {
                    out += t[p++];
                }
            }
            tokens[i] = std::move(out);
        }
        return tokens;
    }

private:
    std::string replacement_;
    bool strip_first_;
};

class ReplaceDecoder final : public TokenDecoder {
public:
    ReplaceDecoder(const std::string& pattern, std::string content) : regex_(pattern), content_(std::move(content)) {}
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        for (auto& t : tokens) t = regex_.replace_all(t, content_);
        return tokens;
    }

private:
    Regex regex_;
    std::string content_;
};

// "<0x41>" -> 0x41; -1 when the token is not a byte token.
int byte_token_value(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
        const char c = t[std::size_t(k)];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

class ByteFallbackDecoder final : public TokenDecoder {
public:
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        std::vector<std::string> out;
        std::string group;
        std::size_t group_tokens = 0;
        auto flush = [&] {
            if (group_tokens == 0) return;
            if (unicode::is_valid_utf8(group)) {
                out.push_back(group);
            } else {
                for (std::size_t k = 0; k < group_tokens; ++k) out.push_back("\xef\xbf\xbd");
            }
            group.clear();
            group_tokens = 0;
        };
        for (auto& t : tokens) {
            const int b = byte_token_value(t);
            if (b >= 0) {
                group += char(b);
                ++group_tokens;
            } else {
                flush();
                out.push_back(std::move(t));
            }
        }
        flush();
        return out;
    }
};

class FuseDecoder final : public TokenDecoder {
public:
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        std::string all;
        for (const auto& t : tokens) all += t;
        return {all};
    }
};

class StripDecoder final : public TokenDecoder {
public:
    StripDecoder(std::string content, std::size_t start, std::size_t stop)
        : content_(std::move(content)), start_(start), stop_(stop) {}
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        for (auto& t : tokens) {
            std::size_t b = 0;
            for (std::size_t k = 0; k < start_ && t.compare(b, content_.size(), content_) == 0; ++k) b += content_.size();
            std::size_t e = t.size();
            for (std::size_t k = 0; k < stop_ && e >= b + content_.size() &&
                                    t.compare(e - content_.size(), content_.size(), content_) == 0;
                 ++k)
                e -= content_.size();
            t = t.substr(b, e - b);
        }
        return tokens;
    }

private:
    std::string content_;
    std::size_t start_, stop_;
};

class SequenceDecoder final : public TokenDecoder {
public:
    explicit SequenceDecoder(std::vector<std::unique_ptr<TokenDecoder>> parts) : parts_(std::move(parts)) {}
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        for (const auto& p : parts_) tokens = p->decode_chain(std::move(tokens));
        return tokens;
    }

private:
    std::vector<std::unique_ptr<TokenDecoder>> parts_;
};

std::string string_field(const json& j, const char* key, const std::string& fallback = {}) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : fallback;
}

// A small count (how many characters a Strip decoder removes); a number of any other kind is
// refused before it is converted (a float such as 1e308 has no size_t value).
std::size_t count_field(const json& j, const char* key) {
    if (!j.contains(key) || j[key].is_null()) return 0;
    const json& v = j[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 4096)
        throw Error(std::string("decoder field '") + key + "' must be an integer from 0 to 4096 (got " + v.dump() + ")");
    return std::size_t(v.get<int64_t>());
}

// A tokenizer.json pattern: {"String": literal} or {"Regex": pattern}, as a regex.
std::string pattern_of(const json& j) {
    if (j.contains("String") && j["String"].is_string()) return Regex::escape(j["String"].get<std::string>());
    if (j.contains("Regex") && j["Regex"].is_string()) return j["Regex"].get<std::string>();
    throw Error("a pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

}  // namespace

std::unique_ptr<TokenDecoder> TokenDecoder::from_json(const json& spec) {
    if (spec.is_null()) return nullptr;
    const std::string type = string_field(spec, "type");
    if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
    if (type == "Metaspace") {
        const std::string scheme = string_field(spec, "prepend_scheme", "always");
        const bool legacy_no_prefix = spec.contains("add_prefix_space") && spec["add_prefix_space"].is_boolean() &&
                                      !spec["add_prefix_space"].get<bool>();
        return std::make_unique<MetaspaceDecoder>(string_field(spec, "replacement", kMetaspace),
                                                  scheme != "never" && !legacy_no_prefix);
    }
    if (type == "Replace") return std::make_unique<ReplaceDecoder>(pattern_of(spec.value("pattern", json::object())), string_field(spec, "content"));
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
    if (type == "Fuse") return std::make_unique<FuseDecoder>();
    if (type == "Strip")
        return std::make_unique<StripDecoder>(string_field(spec, "content", " "), count_field(spec, "start"),
                                              count_field(spec, "stop"));
    if (type == "Sequence") {
        std::vector<std::unique_ptr<TokenDecoder>> parts;
        for (const auto& d : spec.value("decoders", json::array()))
            if (auto p = from_json(d)) parts.push_back(std::move(p));
        return std::make_unique<SequenceDecoder>(std::move(parts));
    }
    throw Error("decoder type '" + type + "' is not supported (supported: ByteLevel, Metaspace, "
                "Replace, ByteFallback, Fuse, Strip, Sequence)");
}

std::string decode_tokens(const TokenDecoder* decoder, std::vector<std::string> tokens) {
    std::string out;
    if (!decoder) {
        for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
        return out;
    }
    for (const auto& t : decoder->decode_chain(std::move(tokens))) out += t;
    return out;
}

}  // namespace lumen
