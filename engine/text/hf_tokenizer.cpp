#include "engine/text/hf_tokenizer.h"

// Over 600 lines: tokenizer.json is one schema (normalizer, pre-tokenizer, BPE model,
// post-processor) read and run in the reference's order; its parts are small classes that only
// this file builds, and each is read with the same few field helpers.

#include <algorithm>
#include <cstdio>
#include <functional>
#include <queue>
#include <set>
#include <unordered_map>

#include "engine/util/error.h"
#include "engine/util/json_file.h"
#include "engine/text/regex.h"
#include "engine/text/token_decoder.h"
#include "engine/text/unicode.h"

namespace lumen {
namespace {

using nlohmann::json;

const std::string kMetaspace = "\xe2\x96\x81";

std::string string_field(const json& j, const char* key, const std::string& fallback = {}) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : fallback;
}
bool bool_field(const json& j, const char* key, bool fallback) {
    return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : fallback;
}
std::string pattern_of(const json& j) {
    if (j.is_object() && j.contains("String") && j["String"].is_string()) return Regex::escape(j["String"].get<std::string>());
    if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) return j["Regex"].get<std::string>();
    throw Error("a pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

// ---------------------------------------------------------------------------------------------
// Pieces: the text between added tokens, split further by the pre-tokenizer.

struct Piece {
    std::string text;
    bool at_origin = false;  // starts at byte 0 of the original input (Metaspace's "first" scheme)
    int32_t token = -1;      // an added token, already final
};
using Pieces = std::vector<Piece>;

// ---------------------------------------------------------------------------------------------
// Normalizers

class Normalizer {
public:
    virtual ~Normalizer() = default;
    virtual void normalize(std::string& s) const = 0;
};

class NfcNormalizer final : public Normalizer {
public:
    void normalize(std::string& s) const override { s = unicode::nfc(s); }
};

class ReplaceNormalizer final : public Normalizer {
public:
    ReplaceNormalizer(const std::string& pattern, std::string content) : regex_(pattern), content_(std::move(content)) {}
    void normalize(std::string& s) const override { s = regex_.replace_all(s, content_); }

private:
    Regex regex_;
    std::string content_;
};

class PrependNormalizer final : public Normalizer {
public:
    explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
    void normalize(std::string& s) const override {
        if (!s.empty()) s = prefix_ + s;
    }

private:
    std::string prefix_;
};

class StripNormalizer final : public Normalizer {
public:
    StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
    void normalize(std::string& s) const override {
        std::size_t b = 0, e = s.size();
        if (left_) {
            while (b < e) {
                std::size_t i = b;
                if (!unicode::is_whitespace(unicode::next_code_point(s, i))) break;
                b = i;
            }
        }
        if (right_) {
            while (e > b) {
                std::size_t p = e - 1;
                while (p > b && (static_cast<unsigned char>(s[p]) & 0xc0) == 0x80) --p;
                std::size_t i = p;
                if (!unicode::is_whitespace(unicode::next_code_point(s, i))) break;
                e = p;
            }
        }
        s = s.substr(b, e - b);
    }

private:
    bool left_, right_;
};

class SequenceNormalizer final : public Normalizer {
public:
    explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
    void normalize(std::string& s) const override {
        for (const auto& p : parts_) p->normalize(s);
    }

private:
    std::vector<std::unique_ptr<Normalizer>> parts_;
};

std::unique_ptr<Normalizer> make_normalizer(const json& spec) {
    if (spec.is_null()) return nullptr;
    const std::string type = string_field(spec, "type");
    if (type == "NFC") return std::make_unique<NfcNormalizer>();
    if (type == "Replace") return std::make_unique<ReplaceNormalizer>(pattern_of(spec.value("pattern", json())), string_field(spec, "content"));
    if (type == "Prepend") return std::make_unique<PrependNormalizer>(string_field(spec, "prepend"));
    if (type == "Strip") return std::make_unique<StripNormalizer>(bool_field(spec, "strip_left", true), bool_field(spec, "strip_right", true));
    if (type == "Sequence") {
        std::vector<std::unique_ptr<Normalizer>> parts;
        for (const auto& n : spec.value("normalizers", json::array()))
            if (auto p = make_normalizer(n)) parts.push_back(std::move(p));
        return std::make_unique<SequenceNormalizer>(std::move(parts));
    }
    throw Error("normalizer type '" + type + "' is not supported (supported: NFC, Replace, Prepend, Strip, Sequence)");
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

class PreTokenizer {
public:
    virtual ~PreTokenizer() = default;
    virtual void pre_tokenize(Pieces& pieces) const = 0;
};

// Replaces each undecided piece with the pieces `f` makes of it, dropping empty ones.
template <class F>
void split_each(Pieces& pieces, F&& f) {
    Pieces out;
    out.reserve(pieces.size());
    for (auto& p : pieces) {
        if (p.token >= 0) {
            out.push_back(std::move(p));
            continue;
        }
        for (auto& q : f(p))
            if (!q.text.empty()) out.push_back(std::move(q));
    }
    pieces = std::move(out);
}

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Splits one piece at matches, as tokenizers' NormalizedString::split does.
Pieces split_piece(const Piece& p, const std::vector<std::pair<std::size_t, std::size_t>>& matches,
                   SplitBehavior behavior, bool invert) {
    struct Segment {
        std::size_t b, e;
        bool match;
    };
    std::vector<Segment> segs;
    std::size_t last = 0;
    for (const auto& [b, e] : matches) {
        if (b > last) segs.push_back({last, b, false});
        segs.push_back({b, e, true});
        last = e;
    }
    if (last < p.text.size()) segs.push_back({last, p.text.size(), false});
    if (invert)
        for (auto& s : segs) s.match = !s.match;

    std::vector<std::pair<std::size_t, std::size_t>> ranges;
    switch (behavior) {
    case SplitBehavior::Removed:
        for (const auto& s : segs)
            if (!s.match) ranges.emplace_back(s.b, s.e);
        break;
    case SplitBehavior::Isolated:
        for (const auto& s : segs) ranges.emplace_back(s.b, s.e);
        break;
    case SplitBehavior::Contiguous:
        for (std::size_t i = 0; i < segs.size(); ++i) {
            if (i > 0 && segs[i].match == segs[i - 1].match) ranges.back().second = segs[i].e;
            else ranges.emplace_back(segs[i].b, segs[i].e);
        }
        break;
    case SplitBehavior::MergedWithPrevious:
        for (std::size_t i = 0; i < segs.size(); ++i) {
            if (segs[i].match && i > 0 && !segs[i - 1].match && !ranges.empty()) ranges.back().second = segs[i].e;
            else ranges.emplace_back(segs[i].b, segs[i].e);
        }
        break;
    case SplitBehavior::MergedWithNext: {
        std::vector<std::pair<std::size_t, std::size_t>> rev;
        for (std::size_t i = segs.size(); i-- > 0;) {
            if (segs[i].match && i + 1 < segs.size() && !segs[i + 1].match && !rev.empty()) rev.back().first = segs[i].b;
            else rev.emplace_back(segs[i].b, segs[i].e);
        }
        ranges.assign(rev.rbegin(), rev.rend());
        break;
    }
    }
    Pieces out;
    for (const auto& [b, e] : ranges) out.push_back({p.text.substr(b, e - b), p.at_origin && b == 0, -1});
    return out;
}

SplitBehavior parse_behavior(const std::string& name) {
    if (name == "Removed") return SplitBehavior::Removed;
    if (name == "Isolated") return SplitBehavior::Isolated;
    if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
    if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
    if (name == "Contiguous") return SplitBehavior::Contiguous;
    throw Error("split behavior '" + name + "' is not supported");
}

class SplitPreTokenizer final : public PreTokenizer {
public:
    SplitPreTokenizer(const std::string& pattern, SplitBehavior behavior, bool invert)
        : regex_(pattern), behavior_(behavior), invert_(invert) {}
    void pre_tokenize(Pieces& pieces) const override {
        split_each(pieces, [&](const Piece& p) { return split_piece(p, regex_.find_all(p.text), behavior_, invert_); });
    }

private:
    Regex regex_;
    SplitBehavior behavior_;
    bool invert_;
};

class MetaspacePreTokenizer final : public PreTokenizer {
public:
    enum class Scheme { Always, First, Never };
    MetaspacePreTokenizer(std::string replacement, Scheme scheme, bool split)
        : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
    void pre_tokenize(Pieces& pieces) const override {
        split_each(pieces, [&](const Piece& p) {
            Piece q = p;
            std::string s;
            for (char c : p.text) {
                if (c == ' ') s += replacement_;
                else s += c;
            }
            const bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
            if (!starts && (scheme_ == Scheme::Always || (scheme_ == Scheme::First && p.at_origin))) s = replacement_ + s;
            q.text = std::move(s);
            if (!split_) return Pieces{q};
            // Each replacement character starts a new piece (merged with what follows it).
            std::vector<std::pair<std::size_t, std::size_t>> matches;
            for (std::size_t i = 0; (i = q.text.find(replacement_, i)) != std::string::npos; i += replacement_.size())
                matches.emplace_back(i, i + replacement_.size());
            return split_piece(q, matches, SplitBehavior::MergedWithNext, false);
        });
    }

private:
    std::string replacement_;
    Scheme scheme_;
    bool split_;
};

// GPT-2's pattern, used by ByteLevel when use_regex is set.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
public:
    ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
        : add_prefix_space_(add_prefix_space), regex_(use_regex ? std::make_unique<Regex>(kGpt2Pattern) : nullptr) {}
    void pre_tokenize(Pieces& pieces) const override {
        split_each(pieces, [&](const Piece& p) {
            Piece q = p;
            if (add_prefix_space_ && (q.text.empty() || q.text[0] != ' ')) q.text = " " + q.text;
            Pieces parts = regex_ ? split_piece(q, regex_->find_all(q.text), SplitBehavior::Isolated, false) : Pieces{q};
            for (auto& part : parts) {
                std::string mapped;
                mapped.reserve(part.text.size() * 2);
                for (unsigned char c : part.text) mapped += unicode::byte_to_unicode(c);
                part.text = std::move(mapped);
            }
            return parts;
        });
    }

private:
    bool add_prefix_space_;
    std::unique_ptr<Regex> regex_;
};

class SequencePreTokenizer final : public PreTokenizer {
public:
    explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
    void pre_tokenize(Pieces& pieces) const override {
        for (const auto& p : parts_) p->pre_tokenize(pieces);
    }

private:
    std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& spec) {
    if (spec.is_null()) return nullptr;
    const std::string type = string_field(spec, "type");
    if (type == "Split")
        return std::make_unique<SplitPreTokenizer>(pattern_of(spec.value("pattern", json())),
                                                   parse_behavior(string_field(spec, "behavior", "Isolated")),
                                                   bool_field(spec, "invert", false));
    if (type == "Metaspace") {
        const std::string scheme_name = string_field(spec, "prepend_scheme", "always");
        auto scheme = MetaspacePreTokenizer::Scheme::Always;
        if (scheme_name == "first") scheme = MetaspacePreTokenizer::Scheme::First;
        else if (scheme_name == "never") scheme = MetaspacePreTokenizer::Scheme::Never;
        else if (scheme_name != "always") throw Error("Metaspace prepend_scheme '" + scheme_name + "' is not supported");
        if (spec.contains("add_prefix_space") && spec["add_prefix_space"].is_boolean() && !spec["add_prefix_space"].get<bool>())
            scheme = MetaspacePreTokenizer::Scheme::Never;
        return std::make_unique<MetaspacePreTokenizer>(string_field(spec, "replacement", kMetaspace), scheme,
                                                       bool_field(spec, "split", true));
    }
    if (type == "ByteLevel")
        return std::make_unique<ByteLevelPreTokenizer>(bool_field(spec, "add_prefix_space", true), bool_field(spec, "use_regex", true));
    if (type == "Sequence") {
        std::vector<std::unique_ptr<PreTokenizer>> parts;
        for (const auto& p : spec.value("pretokenizers", json::array()))
            if (auto q = make_pre_tokenizer(p)) parts.push_back(std::move(q));
        return std::make_unique<SequencePreTokenizer>(std::move(parts));
    }
    throw Error("pre_tokenizer type '" + type + "' is not supported (supported: Split, Metaspace, ByteLevel, Sequence)");
}

// ---------------------------------------------------------------------------------------------
// BPE

class BpeModel {
public:
    explicit BpeModel(const json& spec) {
        const std::string type = string_field(spec, "type", "BPE");
        if (type != "BPE") throw Error("model type '" + type + "' is not supported (supported: BPE)");
        if (!spec.contains("vocab") || !spec["vocab"].is_object()) throw Error("the BPE model has no vocab");
        // Real vocabularies number their tokens densely; a sparse one may not make the id table
        // (a string per id) much larger than the vocabulary itself.
        const int64_t max_id = std::min<int64_t>(kMaxTokenId, 2 * int64_t(spec["vocab"].size()) + 1024);
        for (const auto& [token, id] : spec["vocab"].items()) {
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= max_id)
                throw Error("vocab id of '" + token + "' is not a valid id (ids run from 0 to about the vocabulary's size, " +
                            std::to_string(spec["vocab"].size()) + ")");
            const auto i = id.get<int32_t>();
            vocab_[token] = i;
            if (std::size_t(i) >= vocab_r_.size()) vocab_r_.resize(std::size_t(i) + 1);
            vocab_r_[std::size_t(i)] = token;
        }
        prefix_ = string_field(spec, "continuing_subword_prefix");
        suffix_ = string_field(spec, "end_of_word_suffix");
        fuse_unk_ = bool_field(spec, "fuse_unk", false);
        byte_fallback_ = bool_field(spec, "byte_fallback", false);
        ignore_merges_ = bool_field(spec, "ignore_merges", false);
        const std::string unk = string_field(spec, "unk_token");
        if (!unk.empty()) {
            const auto it = vocab_.find(unk);
            if (it == vocab_.end()) throw Error("unk_token '" + unk + "' is not in the vocabulary");
            unk_id_ = it->second;
        }
        if (byte_fallback_) {
            for (int b = 0; b < 256; ++b) {
                char name[8];
                std::snprintf(name, sizeof name, "<0x%02X>", b);
                const auto it = vocab_.find(name);
                byte_ids_[std::size_t(b)] = it == vocab_.end() ? -1 : it->second;
            }
        }
        int32_t rank = 0;
        for (const auto& m : spec.value("merges", json::array())) {
            std::string a, b;
            if (m.is_string()) {
                const std::string line = m.get<std::string>();
                if (line.rfind("#version", 0) == 0) continue;
                const auto sp = line.find(' ');
                if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
                    throw Error("merge '" + line + "' is not two tokens");
                a = line.substr(0, sp);
                b = line.substr(sp + 1);
            } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
                a = m[0].get<std::string>();
                b = m[1].get<std::string>();
            } else {
                throw Error("a merge must be \"a b\" or [\"a\", \"b\"]");
            }
            const std::string merged = a + b.substr(std::min(prefix_.size(), b.size()));
            const auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(merged);
            if (ia == vocab_.end() || ib == vocab_.end() || im == vocab_.end())
                throw Error("merge '" + a + " " + b + "' uses a token missing from the vocabulary");
            merges_[key(ia->second, ib->second)] = {rank++, im->second};
        }
    }

    std::optional<int32_t> token_id(std::string_view token) const {
        const auto it = vocab_.find(std::string(token));
        return it == vocab_.end() ? std::nullopt : std::optional<int32_t>(it->second);
    }
    const std::string* token(int32_t id) const {
        if (id < 0 || std::size_t(id) >= vocab_r_.size() || vocab_r_[std::size_t(id)].empty()) return nullptr;
        return &vocab_r_[std::size_t(id)];
    }
    int32_t size() const { return int32_t(vocab_r_.size()); }

    void tokenize(const std::string& word, std::vector<int32_t>& out) const {
        if (word.empty()) return;
        if (ignore_merges_) {
            if (const auto it = vocab_.find(word); it != vocab_.end()) {
                out.push_back(it->second);
                return;
            }
        }
        struct Symbol {
            int32_t id;
            int prev, next;
            std::size_t len;
        };
        std::vector<Symbol> syms;
        std::size_t pending_unk = 0;  // bytes of unknown characters waiting to become one unk symbol
        auto push = [&](int32_t id, std::size_t len) {
            syms.push_back({id, int(syms.size()) - 1, int(syms.size()) + 1, len});
        };
        std::string s;
        for (std::size_t i = 0; i < word.size();) {
            const std::size_t start = i;
            unicode::next_code_point(word, i);
            s.assign(word, start, i - start);
            if (start > 0 && !prefix_.empty()) s = prefix_ + s;
            if (i == word.size() && !suffix_.empty()) s += suffix_;
            const auto it = vocab_.find(s);
            if (it != vocab_.end()) {
                if (pending_unk) push(unk_id_, pending_unk), pending_unk = 0;
                push(it->second, i - start);
                continue;
            }
            if (byte_fallback_) {
                bool all = true;
                for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
                if (all) {
                    for (unsigned char c : s) push(byte_ids_[c], 1);
                    continue;
                }
            }
            if (unk_id_ >= 0) {
                if (pending_unk && !fuse_unk_) push(unk_id_, pending_unk), pending_unk = 0;
                pending_unk += i - start;
            }
            // Without an unk token an unknown character is dropped, as the reference does.
        }
        if (pending_unk) push(unk_id_, pending_unk);
        if (syms.empty()) return;
        syms.back().next = -1;

        struct Candidate {
            int32_t rank;
            int pos;
            int32_t new_id;
            bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
        };
        std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
        auto consider = [&](int pos) {
            const int nxt = syms[std::size_t(pos)].next;
            if (nxt < 0) return;
            const auto it = merges_.find(key(syms[std::size_t(pos)].id, syms[std::size_t(nxt)].id));
            if (it != merges_.end()) heap.push({it->second.first, pos, it->second.second});
        };
        for (int i = 0; i + 1 < int(syms.size()); ++i) consider(i);
        while (!heap.empty()) {
            const Candidate top = heap.top();
            heap.pop();
            Symbol& left = syms[std::size_t(top.pos)];
            if (left.len == 0 || left.next < 0) continue;
            Symbol& right = syms[std::size_t(left.next)];
            const auto it = merges_.find(key(left.id, right.id));
            if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale
            left.id = top.new_id;
            left.len += right.len;
            right.len = 0;
            left.next = right.next;
            if (left.next >= 0) syms[std::size_t(left.next)].prev = top.pos;
            if (left.prev >= 0) consider(left.prev);
            consider(top.pos);
        }
        for (const auto& sym : syms)
            if (sym.len > 0) out.push_back(sym.id);
    }

private:
    static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

    std::unordered_map<std::string, int32_t> vocab_;
    std::vector<std::string> vocab_r_;
    std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, merged id)
    std::string prefix_, suffix_;
    bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
    int32_t unk_id_ = -1;
    std::array<int32_t, 256> byte_ids_{};
};

// ---------------------------------------------------------------------------------------------
// Post-processing: only TemplateProcessing changes ids for a single sequence.

struct Template {
    // Each item is either special ids or the sequence itself (empty vector = "$A").
    std::vector<std::optional<std::vector<int32_t>>> items;
    bool present = false;

    std::vector<int32_t> apply(const std::vector<int32_t>& seq) const {
        if (!present) return seq;
        std::vector<int32_t> out;
        for (const auto& item : items) {
            if (item) out.insert(out.end(), item->begin(), item->end());
            else out.insert(out.end(), seq.begin(), seq.end());
        }
        return out;
    }
};

Template parse_post_processor(const json& spec) {
    Template t;
    if (spec.is_null()) return t;
    const std::string type = string_field(spec, "type");
    if (type == "ByteLevel") return t;
    if (type == "Sequence") {
        for (const auto& p : spec.value("processors", json::array())) {
            Template inner = parse_post_processor(p);
            if (inner.present) t = inner;
        }
        return t;
    }
    if (type != "TemplateProcessing")
        throw Error("post_processor type '" + type + "' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
    t.present = true;
    const json specials = spec.value("special_tokens", json::object());
    for (const auto& item : spec.value("single", json::array())) {
        if (item.contains("Sequence")) {
            t.items.emplace_back(std::nullopt);
        } else if (item.contains("SpecialToken")) {
            const std::string name = string_field(item["SpecialToken"], "id");
            if (!specials.contains(name)) throw Error("template names unknown special token '" + name + "'");
            std::vector<int32_t> ids;
            for (const auto& id : specials[name].value("ids", json::array())) {
                if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kMaxTokenId)
                    throw Error("the post-processor's special token '" + name + "' has an id that is not a valid id");
                ids.push_back(int32_t(id.get<int64_t>()));
            }
            t.items.emplace_back(std::move(ids));
        }
    }
    return t;
}

// ---------------------------------------------------------------------------------------------
// transformers picks a Python class before it reads tokenizer.json, and some classes replace the
// file's normalizer, pre-tokenizer and decoder with their own. Mirroring transformers 5.x:
// - model types whose published tokenizer_class is known to be wrong load the file as written;
// - LlamaTokenizer(Fast) otherwise installs Metaspace (prepend "first", or "always" when legacy)
//   and a decoder that strips the one leading space;
// - add_bos_token / add_eos_token in tokenizer_config.json rebuild the post-processor template.

const std::set<std::string> kModelTypesWithIgnoredTokenizerClass{
    "llava", "llava_next", "vipllava", "internlm2", "qwen2", "phi3", "deepseek_v2", "deepseek_v3", "chameleon", "fuyu",
    "modernbert"};

void apply_transformers_class(json& spec, const TokenizerFiles& files) {
    if (kModelTypesWithIgnoredTokenizerClass.count(files.model_type)) return;
    if (files.tokenizer_class == "LlamaTokenizer" || files.tokenizer_class == "CodeLlamaTokenizer") {
        const bool add_prefix_space = files.flag("add_prefix_space").value_or(true);
        const bool legacy = files.flag("legacy").value_or(false);
        spec["normalizer"] = nullptr;
        spec["pre_tokenizer"] = {{"type", "Metaspace"},
                                 {"replacement", kMetaspace},
                                 {"prepend_scheme", !add_prefix_space ? "never" : legacy ? "always" : "first"},
                                 {"split", false}};
        json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}},
                                     {{"type", "ByteFallback"}},
                                     {{"type", "Fuse"}}});
        if (add_prefix_space) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
        spec["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
        if (spec.contains("model") && spec["model"].is_object()) {
            spec["model"]["fuse_unk"] = true;
            spec["model"]["byte_fallback"] = true;
        }
    }
}

Template template_from_flags(const TokenizerFiles& files, const std::function<std::optional<int32_t>(const std::string&)>& id_of) {
    Template t;
    t.present = true;
    auto special = [&](const char* key) -> std::optional<std::vector<int32_t>> {
        const std::string s = files.special_token(key);
        if (s.empty()) return std::nullopt;
        const auto id = id_of(s);
        if (!id) return std::nullopt;
        return std::vector<int32_t>{*id};
    };
    if (files.flag("add_bos_token").value_or(false))
        if (auto bos = special("bos_token")) t.items.emplace_back(*bos);
    t.items.emplace_back(std::nullopt);
    if (files.flag("add_eos_token").value_or(false))
        if (auto eos = special("eos_token")) t.items.emplace_back(*eos);
    return t;
}

// ---------------------------------------------------------------------------------------------

class HfTokenizer final : public Tokenizer {
public:
    HfTokenizer(json spec, const TokenizerFiles& files) {
        apply_transformers_class(spec, files);
        model_ = std::make_unique<BpeModel>(spec.value("model", json::object()));
        normalizer_ = make_normalizer(spec.value("normalizer", json()));
        pre_tokenizer_ = make_pre_tokenizer(spec.value("pre_tokenizer", json()));
        decoder_ = TokenDecoder::from_json(spec.value("decoder", json()));

        next_id_ = model_->size();
        for (const auto& t : spec.value("added_tokens", json::array())) {
            AddedToken a;
            a.content = string_field(t, "content");
            a.special = bool_field(t, "special", false);
            a.lstrip = bool_field(t, "lstrip", false);
            a.rstrip = bool_field(t, "rstrip", false);
            a.single_word = bool_field(t, "single_word", false);
            a.normalized = bool_field(t, "normalized", !a.special);
            add_token(a);
        }
        for (const auto& t : files.added_tokens)
            if (!added_.by_content(t.content)) add_token(t);
        // The special tokens the config names are special even where tokenizer.json says otherwise.
        for (const auto& s : files.special_token_strings()) {
            if (added_.mark_special(s)) continue;
            if (model_->token_id(s)) add_token({-1, s, true, false, false, false, false});
        }
        for (const auto& t : added_.tokens())
            if (t.normalized && normalizer_) {
                std::string pattern = t.content;
                normalizer_->normalize(pattern);
                normalized_patterns_[t.id] = pattern;
            }

        const bool explicit_flags = files.flag("add_bos_token").has_value() || files.flag("add_eos_token").has_value();
        if (explicit_flags || spec.value("post_processor", json()).is_null())
            template_ = template_from_flags(files, [&](const std::string& s) { return token_id(s); });
        else
            template_ = parse_post_processor(spec["post_processor"]);

        bos_token_ = files.special_token("bos_token");
        eos_token_ = files.special_token("eos_token");
        if (files.config.contains("chat_template") && files.config["chat_template"].is_string())
            chat_template_ = files.config["chat_template"].get<std::string>();
    }

    std::vector<int32_t> encode(std::string_view raw, const EncodeOptions& options) const override {
        const std::string text = unicode::to_valid_utf8(raw);
        Pieces pieces;
        // Pass 1: tokens matched on the raw text.
        for (const auto& seg : added_.split(text, false, options.split_special_tokens))
            pieces.push_back({text.substr(seg.begin, seg.end - seg.begin), seg.begin == 0, seg.id});
        // Pass 2: normalise what is left, then match the tokens that are matched on normalised text.
        split_each(pieces, [&](const Piece& p) {
            Piece q = p;
            if (normalizer_) normalizer_->normalize(q.text);
            Pieces out;
            for (const auto& seg : added_.split(q.text, true, options.split_special_tokens, &normalized_patterns_))
                out.push_back({q.text.substr(seg.begin, seg.end - seg.begin), q.at_origin && seg.begin == 0, seg.id});
            return out;
        });
        if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
        std::vector<int32_t> ids;
        for (const auto& p : pieces) {
            if (p.token >= 0) ids.push_back(p.token);
            else model_->tokenize(p.text, ids);
        }
        return options.add_special_tokens ? template_.apply(ids) : ids;
    }

    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
        std::vector<std::string> tokens;
        tokens.reserve(ids.size());
        for (int32_t id : ids) {
            std::string t = token(id);
            if (t.empty()) continue;
            if (skip_special_tokens && is_special_content(t)) continue;
            tokens.push_back(std::move(t));
        }
        return decode_tokens(decoder_.get(), std::move(tokens));
    }

    std::string token(int32_t id) const override {
        if (const auto* a = added_.by_id(id)) return a->content;
        const std::string* t = model_->token(id);
        return t ? *t : std::string();
    }
    std::optional<int32_t> token_id(std::string_view t) const override {
        if (const auto* a = added_.by_content(t)) return a->id;
        return model_->token_id(t);
    }
    int32_t vocab_size() const override { return next_id_; }

private:
    void add_token(AddedToken t) {
        if (const auto existing = model_->token_id(t.content)) t.id = *existing;
        else if (const auto* a = added_.by_content(t.content)) t.id = a->id;
        else t.id = next_id_;
        next_id_ = std::max(next_id_, t.id + 1);
        added_.add(t);
    }
    bool is_special_content(const std::string& content) const {
        const auto* a = added_.by_content(content);
        return a && a->special;
    }

    std::unique_ptr<BpeModel> model_;
    std::unique_ptr<Normalizer> normalizer_;
    std::unique_ptr<PreTokenizer> pre_tokenizer_;
    std::unique_ptr<TokenDecoder> decoder_;
    Template template_;
    std::map<int32_t, std::string> normalized_patterns_;
    int32_t next_id_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& json_text, const TokenizerFiles& files) {
    json spec = parse_json(json_text, "");
    if (!spec.is_object()) throw Error("not a JSON object");
    try {
        return std::make_unique<HfTokenizer>(std::move(spec), files);
    } catch (const json::exception& e) {
        throw Error("a field has the wrong type (" + std::string(e.what()) + ")");
    }
}

}  // namespace lumen
