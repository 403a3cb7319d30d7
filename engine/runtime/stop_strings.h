#pragma once
// A reply's text as it streams, watched for stop strings: a stop string ends the reply before it,
// and text that may be the start of one waits until it is known not to be.
#include <cstddef>
#include <string>
#include <vector>

namespace lumen {

class StopStrings {
public:
    explicit StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {}

    // Adds newly decoded text; returns the part of the reply that can be sent now.
    std::string push(const std::string& decoded);
    // Whether a stop string has appeared; the text then ends before it.
    bool stopped() const { return stopped_; }
    // Whether some text is still held back as the possible start of a stop string.
    bool holding_back() const { return emitted_ < text_.size(); }
    // Adds the last decoded text; returns everything not yet sent.
    std::string flush(const std::string& last);

private:
    std::vector<std::string> stops_;
    std::string text_;         // the reply so far
    std::size_t emitted_ = 0;  // bytes of text_ already sent
    bool stopped_ = false;
};

}  // namespace lumen
