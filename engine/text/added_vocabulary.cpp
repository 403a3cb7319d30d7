#include "engine/text/added_vocabulary.h"

#include "engine/text/unicode.h"

namespace lumen {

void AddedVocabulary::add(const AddedToken& token) {
    if (token.content.empty()) return;
    if (const auto it = by_content_.find(token.content); it != by_content_.end()) {
        by_id_.erase(tokens_[it->second].id);
        tokens_[it->second] = token;
        by_id_[token.id] = it->second;
        return;
    }
    by_content_.emplace(token.content, tokens_.size());
    by_id_[token.id] = tokens_.size();
    tokens_.push_back(token);
}

bool AddedVocabulary::mark_special(std::string_view content) {
    const auto it = by_content_.find(content);
    if (it == by_content_.end()) return false;
    tokens_[it->second].special = true;
    return true;
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::by_content(std::string_view content) const {
    const auto it = by_content_.find(content);
    return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

namespace {

// The code point that ends just before byte `pos` (pos > 0).
char32_t code_point_before(std::string_view s, std::size_t pos) {
    std::size_t start = pos - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80) --start;
    std::size_t i = start;
    return unicode::next_code_point(s, i);
}

char32_t code_point_at(std::string_view s, std::size_t pos) {
    std::size_t i = pos;
    return unicode::next_code_point(s, i);
}

}  // namespace

std::vector<AddedVocabulary::Segment> AddedVocabulary::split(std::string_view text, bool normalized,
                                                             bool skip_special,
                                                             const std::map<int32_t, std::string>* patterns) const {
    // Candidates grouped by first byte, so each position checks only the tokens that can start there.
    std::array<std::vector<std::pair<std::string_view, const AddedToken*>>, 256> by_first{};
    bool any = false;
    for (const auto& t : tokens_) {
        if (t.normalized != normalized) continue;
        std::string_view pattern = t.content;
        if (patterns) {
            const auto it = patterns->find(t.id);
            if (it != patterns->end()) pattern = it->second;
        }
        if (pattern.empty()) continue;
        by_first[static_cast<unsigned char>(pattern[0])].emplace_back(pattern, &t);
        any = true;
    }
    std::vector<Segment> out;
    if (!any) {
        if (!text.empty()) out.push_back({0, text.size(), -1});
        return out;
    }

    std::size_t emitted = 0;  // end of what has been emitted so far
    std::size_t pos = 0;
    while (pos < text.size()) {
        const auto& candidates = by_first[static_cast<unsigned char>(text[pos])];
        std::size_t best_len = 0;
        const AddedToken* best = nullptr;
        for (const auto& [pattern, token] : candidates)
            if (pattern.size() > best_len && text.compare(pos, pattern.size(), pattern) == 0)
                best_len = pattern.size(), best = token;
        if (!best) {
            ++pos;
            continue;
        }
        std::size_t start = pos, stop = pos + best_len;
        pos = stop;  // a rejected match is not tried again at a shorter length
        if (skip_special && best->special) continue;
        if (best->single_word) {
            const bool left_ok = start == 0 || !unicode::is_word_char(code_point_before(text, start));
            const bool right_ok = stop == text.size() || !unicode::is_word_char(code_point_at(text, stop));
            if (!left_ok || !right_ok) continue;
        }
        if (best->lstrip) {
            while (start > emitted) {
                std::size_t p = start - 1;
                while (p > emitted && (static_cast<unsigned char>(text[p]) & 0xc0) == 0x80) --p;
                std::size_t i = p;
                if (!unicode::is_whitespace(unicode::next_code_point(text, i))) break;
                start = p;
            }
        }
        if (best->rstrip) {
            while (stop < text.size()) {
                std::size_t i = stop;
                if (!unicode::is_whitespace(unicode::next_code_point(text, i))) break;
                stop = i;
            }
            pos = stop;
        }
        if (emitted < start) out.push_back({emitted, start, -1});
        out.push_back({start, stop, best->id});
        emitted = stop;
    }
    if (emitted < text.size()) out.push_back({emitted, text.size(), -1});
    return out;
}

}  // namespace lumen
