#pragma once
// Tokens added on top of a model vocabulary (special tokens, chat markers, image placeholders).
// They are cut out of the text before the model sees it: leftmost match first, the longest among
// those starting there, with the lstrip / rstrip / single_word rules of Hugging Face tokenizers.
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lumen {

struct AddedToken {
    int32_t id = -1;
    std::string content;
    bool special = false;
    bool lstrip = false;
    bool rstrip = false;
    bool normalized = false;
    bool single_word = false;
};

class AddedVocabulary {
public:
    // Adds or replaces (same content) a token.
    void add(const AddedToken& token);
    // Marks an existing token special; returns false when no token has that content.
    bool mark_special(std::string_view content);

    const AddedToken* by_id(int32_t id) const;
    const AddedToken* by_content(std::string_view content) const;
    const std::vector<AddedToken>& tokens() const { return tokens_; }
    bool empty() const { return tokens_.empty(); }

    // One part of a split text: plain text [begin, end), or an added token (id >= 0) whose span
    // includes any whitespace it strips.
    struct Segment {
        std::size_t begin;
        std::size_t end;
        int32_t id;
    };
    // Splits `text` at the tokens whose `normalized` flag equals `normalized` (their patterns are
    // `patterns` when given, else their content). Special tokens are skipped when `skip_special`.
    std::vector<Segment> split(std::string_view text, bool normalized, bool skip_special,
                               const std::map<int32_t, std::string>* patterns = nullptr) const;

private:
    std::vector<AddedToken> tokens_;
    std::map<std::string, std::size_t, std::less<>> by_content_;
    std::map<int32_t, std::size_t> by_id_;
};

}  // namespace lumen
