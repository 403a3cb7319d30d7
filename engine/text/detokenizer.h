#pragma once
// Streaming text for generated ids. Each delta is final: it never splits a UTF-8 character (bytes
// of byte-fallback or byte-level tokens wait for the rest of their character), and the deltas
// concatenate to exactly tokenizer.decode(all ids).
#include <cstdint>
#include <string>
#include <vector>

#include "engine/text/tokenizer.h"

namespace lumen {

class Detokenizer {
public:
    explicit Detokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = true)
        : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

    // Adds one id; returns the text that became final (often empty while a character is incomplete).
    std::string push(int32_t id);
    // Returns everything still held back; call once after the last id.
    std::string finish();

    const std::vector<int32_t>& ids() const { return ids_; }

private:
    std::string decode_window() const;

    const Tokenizer& tokenizer_;
    bool skip_special_;
    std::vector<int32_t> ids_;
    std::size_t window_start_ = 0;  // decoding restarts here: earlier ids are fully emitted
    std::string window_emitted_;    // the part of decode(window) already emitted
};

}  // namespace lumen
