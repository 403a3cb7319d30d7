#include "engine/runtime/stop_strings.h"

#include <algorithm>

namespace lumen {

std::string StopStrings::push(const std::string& decoded) {
    text_ += decoded;
    std::size_t keep = text_.size();
    bool found = false;
    for (const auto& stop : stops_) {
        if (stop.empty()) continue;
        // A stop string that appears now ends after the text already sent.
        const std::size_t from = emitted_ > stop.size() ? emitted_ - stop.size() : 0;
        const std::size_t at = text_.find(stop, from);
        if (at != std::string::npos) {
            keep = std::min(keep, at);
            found = true;
        }
    }
    if (found) {
        text_.resize(keep);
        stopped_ = true;
    } else {
        // The longest end of the text that begins some stop string waits.
        for (const auto& stop : stops_) {
            if (stop.empty()) continue;
            for (std::size_t n = std::min(stop.size() - 1, text_.size()); n > 0; --n)
                if (text_.compare(text_.size() - n, n, stop, 0, n) == 0) {
                    keep = std::min(keep, text_.size() - n);
                    break;
                }
        }
    }
    if (keep <= emitted_) return {};
    std::string ready = text_.substr(emitted_, keep - emitted_);
    emitted_ = keep;
    return ready;
}

std::string StopStrings::flush(const std::string& last) {
    text_ += last;
    std::string rest = text_.size() > emitted_ ? text_.substr(emitted_) : std::string();
    emitted_ = text_.size();
    return rest;
}

}  // namespace lumen
