#pragma once
// Regular expressions as tokenizer.json files use them (written for Oniguruma), run with PCRE2 in
// UTF + Unicode-property mode, and iterated over a subject the way the reference tokenizers do.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lumen {

class Regex {
public:
    explicit Regex(std::string_view pattern);  // throws lumen::Error naming the pattern
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Byte ranges [begin, end) of the successive non-overlapping matches in `subject` (valid UTF-8).
    std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view subject) const;

    // `subject` with every match replaced by `replacement`.
    std::string replace_all(std::string_view subject, std::string_view replacement) const;

    // A pattern that matches `literal` exactly.
    static std::string escape(std::string_view literal);

private:
    struct Compiled;
    std::unique_ptr<Compiled> compiled_;
};

}  // namespace lumen
