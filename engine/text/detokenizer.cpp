#include "engine/text/detokenizer.h"

#include <span>

#include "engine/text/unicode.h"

namespace lumen {
namespace {

const std::string kReplacement = "\xef\xbf\xbd";

// The length of the part of `s` that later tokens cannot change: without a trailing U+FFFD run
// (an incomplete character) or trailing whitespace (decoders and clean-up rules may rewrite a
// space depending on what follows it).
std::size_t settled_length(const std::string& s) {
    std::size_t n = s.size();
    for (;;) {
        if (n >= kReplacement.size() && s.compare(n - kReplacement.size(), kReplacement.size(), kReplacement) == 0) {
            n -= kReplacement.size();
            continue;
        }
        if (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r')) {
            --n;
            continue;
        }
        return n;
    }
}

}  // namespace

std::string Detokenizer::decode_window() const {
    return tokenizer_.decode(std::span<const int32_t>(ids_).subspan(window_start_), skip_special_);
}

std::string Detokenizer::push(int32_t id) {
    ids_.push_back(id);
    const std::string text = decode_window();
    const std::size_t settled = settled_length(text);
    if (settled <= window_emitted_.size() || text.compare(0, window_emitted_.size(), window_emitted_) != 0) return {};
    std::string delta = text.substr(window_emitted_.size(), settled - window_emitted_.size());
    window_emitted_ = text.substr(0, settled);

    // When all of the window is out, restart it at the last id, which keeps the context a decoder
    // needs (a token's leading space depends on whether a token precedes it).
    if (settled == text.size() && ids_.size() - window_start_ > 1) {
        const std::size_t last = ids_.size() - 1;
        const std::string tail = tokenizer_.decode(std::span<const int32_t>(ids_).subspan(last), skip_special_);
        if (tail.find(kReplacement) == std::string::npos) {
            window_start_ = last;
            window_emitted_ = tail;
        }
    }
    return delta;
}

std::string Detokenizer::finish() {
    const std::string text = decode_window();
    std::string delta;
    if (text.size() > window_emitted_.size() && text.compare(0, window_emitted_.size(), window_emitted_) == 0)
        delta = text.substr(window_emitted_.size());
    window_emitted_ = text;
    return delta;
}

}  // namespace lumen
