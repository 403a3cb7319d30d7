#include "engine/text/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "engine/util/error.h"

namespace lumen {
namespace {

// Oniguruma's \s is the White_Space property; PCRE2's UCP \s also takes U+180E, so spell it out.
constexpr std::string_view kSpaceMembers =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string translate(std::string_view pattern) {
    std::string out;
    bool in_class = false;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        if (c == '\\' && i + 1 < pattern.size()) {
            const char n = pattern[i + 1];
            if (n == 's') {
                out += in_class ? std::string(kSpaceMembers) : "[" + std::string(kSpaceMembers) + "]";
            } else if (n == 'S' && !in_class) {
                out += "[^" + std::string(kSpaceMembers) + "]";
            } else {
                out += c;
                out += n;
            }
            ++i;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = true;
            out += c;
            // A ']' right after '[' or '[^' is a literal member.
            if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
            if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
            continue;
        }
        if (c == ']' && in_class) in_class = false;
        out += c;
    }
    return out;
}

}  // namespace

struct Regex::Compiled {
    pcre2_code* code = nullptr;
    std::string pattern;  // for messages (its first 200 bytes)
    ~Compiled() {
        if (code) pcre2_code_free(code);
    }
};

Regex::Regex(std::string_view pattern) : compiled_(std::make_unique<Compiled>()) {
    compiled_->pattern = std::string(pattern.substr(0, 200));
    const std::string translated = translate(pattern);
    int error = 0;
    PCRE2_SIZE offset = 0;
    compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                    PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (!compiled_->code) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof message);
        throw Error("regular expression '" + std::string(pattern) + "' does not compile at offset " +
                    std::to_string(offset) + ": " + reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if unavailable
}

Regex::~Regex() = default;

std::vector<std::pair<std::size_t, std::size_t>> Regex::find_all(std::string_view subject) const {
    std::vector<std::pair<std::size_t, std::size_t>> out;
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(compiled_->code, nullptr);
    if (!data) throw Error("out of memory for a regular expression match");
    const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
    std::size_t start = 0;
    std::size_t last_match_end = std::string_view::npos;
    while (start <= subject.size()) {
        const int rc = pcre2_match(compiled_->code, text, subject.size(), start, PCRE2_NO_UTF_CHECK, data, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            pcre2_match_data_free(data);
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(rc, message, sizeof message);
            throw Error("the tokenizer's pattern '" + compiled_->pattern + "' cannot split this text (" +
                        reinterpret_cast<const char*>(message) + "); the tokenizer file is damaged or hostile");
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
        const std::size_t b = ov[0], e = ov[1];
        if (b == e && last_match_end == e) {
            // An empty match where the previous one ended is skipped; step over one character.
            if (start >= subject.size()) break;
            ++start;
            while (start < subject.size() && (static_cast<unsigned char>(subject[start]) & 0xc0) == 0x80) ++start;
            continue;
        }
        out.emplace_back(b, e);
        start = e;
        last_match_end = e;
    }
    pcre2_match_data_free(data);
    return out;
}

std::string Regex::replace_all(std::string_view subject, std::string_view replacement) const {
    std::string out;
    std::size_t last = 0;
    for (const auto& [b, e] : find_all(subject)) {
        out.append(subject.substr(last, b - last));
        out.append(replacement);
        last = e;
    }
    out.append(subject.substr(last));
    return out;
}

std::string Regex::escape(std::string_view literal) {
    std::string out;
    for (char c : literal) {
        if (std::string_view("\\^$.|?*+()[]{}-/").find(c) != std::string_view::npos) out += '\\';
        out += c;
    }
    return out;
}

}  // namespace lumen
