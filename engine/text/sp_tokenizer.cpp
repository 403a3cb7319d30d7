#include "engine/text/sp_tokenizer.h"

#include <cstring>
#include <sentencepiece_processor.h>
#include <set>

#include "engine/util/error.h"
#include "engine/util/text_file.h"
#include "engine/text/token_decoder.h"
#include "engine/text/unicode.h"

namespace lumen {
namespace {

const std::string kMetaspace = "\xe2\x96\x81";

// ---------------------------------------------------------------------------------------------
// Just enough of the protobuf wire format to rewrite one boolean inside normalizer_spec.

uint64_t read_varint(const std::string& s, std::size_t& i) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (i >= s.size()) throw Error("tokenizer.model: truncated protobuf varint");
        const auto b = static_cast<unsigned char>(s[i++]);
        v |= uint64_t(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    throw Error("tokenizer.model: malformed protobuf varint");
}

void write_varint(std::string& out, uint64_t v) {
    do {
        unsigned char b = v & 0x7f;
        v >>= 7;
        if (v) b |= 0x80;
        out += char(b);
    } while (v);
}

// Calls f(field, wire_type, bytes of the whole field) for each top-level field of a message.
template <class F>
void for_each_field(const std::string& msg, F&& f) {
    std::size_t i = 0;
    while (i < msg.size()) {
        const std::size_t start = i;
        const uint64_t key = read_varint(msg, i);
        const int wire = int(key & 7);
        std::size_t payload_begin = i, payload_len = 0;
        switch (wire) {
        case 0: read_varint(msg, i); break;
        case 1: i += 8; break;
        case 2: {
            const uint64_t len = read_varint(msg, i);
            if (len > msg.size() - i) throw Error("tokenizer.model: truncated protobuf message");
            payload_len = std::size_t(len);
            payload_begin = i;
            i += payload_len;
            break;
        }
        case 5: i += 4; break;
        default: throw Error("tokenizer.model: unsupported protobuf wire type " + std::to_string(wire));
        }
        if (i > msg.size()) throw Error("tokenizer.model: truncated protobuf message");
        f(key >> 3, wire, msg.substr(start, i - start), msg.substr(payload_begin, payload_len));
    }
}

// A normalizer's precompiled_charsmap, checked the way libsentencepiece's loader does not: it is
// a uint32 size, a darts-clone double array of that many bytes, then NUL-terminated replacement
// strings, and sentencepiece follows the array's offsets without bounds checks. Every node a
// lookup can reach must keep the lookup inside the array, and every value inside the strings.
void check_charsmap(const std::string& blob, const char* spec) {
    auto broken = [&](const std::string& why) {
        return Error(std::string("tokenizer.model: the ") + spec + "'s character map is damaged (" + why + ")");
    };
    if (blob.empty()) return;  // no map: sentencepiece normalizes nothing
    if (blob.size() < 4) throw broken("shorter than its size field");
    const uint32_t trie_bytes = uint32_t(uint8_t(blob[0])) | uint32_t(uint8_t(blob[1])) << 8 |
                                uint32_t(uint8_t(blob[2])) << 16 | uint32_t(uint8_t(blob[3])) << 24;
    if (trie_bytes > blob.size() - 4 || trie_bytes % 4 != 0 || trie_bytes < 4) throw broken("its trie size does not fit the file");
    const std::size_t n = trie_bytes / 4;
    std::vector<uint32_t> units(n);
    std::memcpy(units.data(), blob.data() + 4, trie_bytes);
    const std::string_view strings(blob.data() + 4 + trie_bytes, blob.size() - 4 - trie_bytes);

    auto offset = [](uint32_t u) -> std::size_t { return std::size_t(u >> 10) << ((u & (1u << 9)) >> 6); };
    auto label = [](uint32_t u) { return u & ((1u << 31) | 0xFFu); };
    auto has_leaf = [](uint32_t u) { return ((u >> 8) & 1u) == 1u; };
    // A lookup at node position p reads units[p ^ c] for any byte c: the whole 256-unit block.
    auto block_fits = [&](std::size_t p) { return (p | 0xFFu) < n; };

    std::vector<bool> visited(n, false);
    std::vector<std::size_t> blocks{offset(units[0])};
    if (!block_fits(blocks.back())) throw broken("its root points outside it");
    while (!blocks.empty()) {
        const std::size_t base = blocks.back();
        blocks.pop_back();
        for (uint32_t c = 0; c < 256; ++c) {
            const std::size_t q = base ^ c;
            if (label(units[q]) != c || visited[q]) continue;
            visited[q] = true;
            const std::size_t next = q ^ offset(units[q]);
            if (!block_fits(next)) throw broken("a node points outside it");
            if (has_leaf(units[q])) {
                const uint32_t value = units[next] & ((1u << 31) - 1);
                if (value >= strings.size() || strings.find('\0', value) == std::string_view::npos)
                    throw broken("a replacement lies outside its strings");
            }
            blocks.push_back(next);
        }
    }
}

}  // namespace

// Refuses a model whose normalizer or denormalizer would make libsentencepiece read outside the
// file; the rest of the proto, libsentencepiece checks itself.
void check_sentencepiece_model(const std::string& model) {
    constexpr uint64_t kNormalizerSpec = 3, kDenormalizerSpec = 5, kPrecompiledCharsmap = 2;
    constexpr uint64_t kPieces = 1, kPieceText = 1, kPieceType = 3, kNormalPiece = 1, kUserDefinedPiece = 4;
    constexpr uint64_t kTrainerSpec = 2, kModelType = 3, kUnigram = 1;
    bool unstorable_piece = false;
    uint64_t model_type = kUnigram;  // the proto's default
    std::vector<std::pair<std::string, const char*>> maps;
    try {
        for_each_field(model, [&](uint64_t field, int wire, const std::string&, const std::string& payload) {
            if (field == kPieces && wire == 2) {
                // A unigram model stores its normal and user-defined pieces in a trie that takes no
                // empty key and no NUL byte (libsentencepiece throws from inside its loader
                // otherwise); BPE models keep theirs in a map, and real ones have a "\0" piece.
                std::string text;
                uint64_t type = kNormalPiece;
                for_each_field(payload, [&](uint64_t inner, int inner_wire, const std::string& whole, const std::string& bytes) {
                    if (inner == kPieceText && inner_wire == 2) text = bytes;
                    if (inner == kPieceType && inner_wire == 0) {
                        std::size_t at = 1;  // after the key
                        type = read_varint(whole, at);
                    }
                });
                if ((type == kNormalPiece || type == kUserDefinedPiece) && (text.empty() || text.find('\0') != std::string::npos))
                    unstorable_piece = true;
                return;
            }
            if (field == kTrainerSpec && wire == 2) {
                for_each_field(payload, [&](uint64_t inner, int inner_wire, const std::string& whole, const std::string&) {
                    if (inner == kModelType && inner_wire == 0) {
                        std::size_t at = 1;
                        model_type = read_varint(whole, at);
                    }
                });
                return;
            }
            if (wire != 2 || (field != kNormalizerSpec && field != kDenormalizerSpec)) return;
            for_each_field(payload, [&](uint64_t inner, int inner_wire, const std::string&, const std::string& blob) {
                if (inner == kPrecompiledCharsmap && inner_wire == 2)
                    maps.emplace_back(blob, field == kNormalizerSpec ? "normalizer" : "denormalizer");
            });
        });
    } catch (const Error& e) {
        const std::string what = e.what();
        throw Error("tokenizer.model: not a sentencepiece model (" + what.substr(what.find(": ") + 2) + ")");
    }
    if (unstorable_piece && model_type == kUnigram)
        throw Error("tokenizer.model: not a sentencepiece model (a unigram piece is empty or holds a NUL byte)");
    for (const auto& [blob, spec] : maps) check_charsmap(blob, spec);
}

std::string with_dummy_prefix(const std::string& model, bool value) {
    constexpr uint64_t kNormalizerSpec = 3, kAddDummyPrefix = 3;
    auto normalizer_with_flag = [&](const std::string& spec) {
        std::string out;
        for_each_field(spec, [&](uint64_t field, int wire, const std::string& whole, const std::string&) {
            if (!(field == kAddDummyPrefix && wire == 0)) out += whole;
        });
        write_varint(out, (kAddDummyPrefix << 3) | 0);
        write_varint(out, value ? 1 : 0);
        return out;
    };
    std::string out;
    bool found = false;
    for_each_field(model, [&](uint64_t field, int wire, const std::string& whole, const std::string& payload) {
        if (field == kNormalizerSpec && wire == 2 && !found) {
            const std::string spec = normalizer_with_flag(payload);
            write_varint(out, (kNormalizerSpec << 3) | 2);
            write_varint(out, spec.size());
            out += spec;
            found = true;
        } else if (!(field == kNormalizerSpec && wire == 2)) {
            out += whole;
        }
    });
    if (!found) {
        const std::string spec = normalizer_with_flag("");
        write_varint(out, (kNormalizerSpec << 3) | 2);
        write_varint(out, spec.size());
        out += spec;
    }
    return out;
}

namespace {

// transformers' clean_up_tokenization, which InternLM2's tokenizer always applies when decoding.
std::string clean_up_tokenization(std::string s) {
    static const std::pair<const char*, const char*> rules[] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : rules) {
        const std::string f = from, t = to;
        std::string out;
        std::size_t last = 0;
        for (std::size_t p; (p = s.find(f, last)) != std::string::npos; last = p + f.size()) out.append(s, last, p - last) += t;
        out.append(s, last);
        s = std::move(out);
    }
    return s;
}

class SentencePieceTokenizer final : public Tokenizer {
public:
    enum class Style { Llama, InternLM2, Plain };

    SentencePieceTokenizer(const std::filesystem::path& model_file, const TokenizerFiles& files) {
        const auto bytes = read_text_file(model_file, kTokenizerFile);
        if (!bytes) throw Error(model_file.string() + ": no such file");
        if (files.tokenizer_class == "LlamaTokenizer" || files.tokenizer_class == "CodeLlamaTokenizer") style_ = Style::Llama;
        else if (files.tokenizer_class == "InternLM2Tokenizer") style_ = Style::InternLM2;
        else style_ = Style::Plain;

        // Without a legacy entry transformers 5 treats Llama tokenizers as non-legacy.
        legacy_ = files.flag("legacy").value_or(false);
        add_prefix_space_ = files.flag("add_prefix_space").value_or(true);
        const bool llama_rules = style_ == Style::Llama && !legacy_;
        try {
            check_sentencepiece_model(*bytes);
        } catch (const Error& e) {
            throw Error(model_file.parent_path().string() + "/" + e.what());
        }
        const std::string proto = llama_rules ? with_dummy_prefix(*bytes, false) : *bytes;
        sentencepiece::util::Status status;
        try {
            status = sp_.LoadFromSerializedProto(proto);
        } catch (const std::exception& e) {  // darts-clone, inside libsentencepiece, throws on keys it cannot store
            throw Error(model_file.string() + ": not a sentencepiece model (" + e.what() + ")");
        }
        if (!status.ok()) throw Error(model_file.string() + ": not a sentencepiece model (" + status.ToString() + ")");

        const bool default_bos = style_ != Style::Plain;
        add_bos_ = files.flag("add_bos_token").value_or(default_bos);
        add_eos_ = files.flag("add_eos_token").value_or(false);
        bos_token_ = files.special_token("bos_token");
        eos_token_ = files.special_token("eos_token");
        if (bos_token_.empty() && sp_.bos_id() >= 0) bos_token_ = sp_.IdToPiece(sp_.bos_id());
        if (eos_token_.empty() && sp_.eos_id() >= 0) eos_token_ = sp_.IdToPiece(sp_.eos_id());
        unk_token_ = files.special_token("unk_token");
        if (unk_token_.empty()) unk_token_ = sp_.unk_id() >= 0 ? sp_.IdToPiece(sp_.unk_id()) : "<unk>";
        if (files.config.contains("chat_template") && files.config["chat_template"].is_string())
            chat_template_ = files.config["chat_template"].get<std::string>();

        // The slow tokenizers split out every token of added_tokens_decoder and every special token.
        for (const auto& t : files.added_tokens) added_.add(t);
        for (const auto& s : files.special_token_strings()) {
            if (added_.mark_special(s)) continue;
            const int id = sp_.PieceToId(s);
            if (id != sp_.unk_id() || s == unk_token_) added_.add({id, s, true, false, false, false, false});
        }
        for (auto t : added_.tokens()) {
            t.normalized = false;
            raw_split_.add(t);
        }
        vocab_size_ = int32_t(sp_.GetPieceSize());
        for (const auto& t : added_.tokens()) vocab_size_ = std::max(vocab_size_, t.id + 1);
        unk_prefix_length_ = sp_.EncodeAsIds(unk_token_).size();

        if (style_ == Style::Llama) {
            nlohmann::json decoders = nlohmann::json::array(
                {{{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}},
                 {{"type", "ByteFallback"}},
                 {{"type", "Fuse"}}});
            if (add_prefix_space_) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
            decoder_ = TokenDecoder::from_json({{"type", "Sequence"}, {"decoders", decoders}});
        }
    }

    std::vector<int32_t> encode(std::string_view raw, const EncodeOptions& options) const override {
        std::string text = unicode::to_valid_utf8(raw);
        const bool llama_rules = style_ == Style::Llama && !legacy_;
        if (llama_rules && !text.empty()) {  // an empty text stays empty, as in transformers
            std::string replaced;
            for (std::size_t p = 0; p < text.size();) {
                if (text.compare(p, kMetaspace.size(), kMetaspace) == 0) replaced += ' ', p += kMetaspace.size();
                else replaced += text[p++];
            }
            text = add_prefix_space_ ? kMetaspace + replaced : replaced;
        }
        std::vector<int32_t> ids;
        if (options.add_special_tokens && add_bos_)
            if (auto bos = bos_id()) ids.push_back(*bos);
        const std::size_t body = ids.size();
        // Whitespace that lstrip/rstrip tokens absorb is inside their segments, so it is dropped
        // just as the slow tokenizers strip it from the neighbouring text.
        for (const auto& seg : raw_split_.split(text, false, options.split_special_tokens)) {
            if (seg.id >= 0) {
                ids.push_back(seg.id);
                continue;
            }
            const std::string chunk = text.substr(seg.begin, seg.end - seg.begin);
            if (llama_rules && (chunk.rfind(kMetaspace, 0) == 0 || chunk[0] == ' ')) {
                const auto pieces = sp_.EncodeAsIds(unk_token_ + chunk);
                for (std::size_t k = unk_prefix_length_; k < pieces.size(); ++k) ids.push_back(pieces[k]);
            } else {
                for (int id : sp_.EncodeAsIds(chunk)) ids.push_back(id);
            }
        }
        // "▁<s>..." leaves a lone "▁" before the special token; transformers drops it.
        if (llama_rules && ids.size() > body + 1 && sp_.IdToPiece(ids[body]) == kMetaspace && is_special(ids[body + 1]))
            ids.erase(ids.begin() + std::ptrdiff_t(body));
        if (options.add_special_tokens && add_eos_)
            if (auto eos = eos_id()) ids.push_back(*eos);
        return ids;
    }

    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
        std::vector<std::string> tokens;
        for (int32_t id : ids) {
            if (skip_special_tokens && is_special(id)) continue;
            std::string t = token(id);
            if (!t.empty()) tokens.push_back(std::move(t));
        }
        if (decoder_) return decode_tokens(decoder_.get(), std::move(tokens));

        // Runs of ordinary pieces go through sentencepiece; special tokens are kept as written.
        std::string out;
        std::vector<std::string> run;
        bool prev_special = false;
        auto flush = [&] {
            out += unicode::to_valid_utf8(sp_.DecodePieces(run));
            run.clear();
        };
        for (auto& t : tokens) {
            const auto* added = added_.by_content(t);
            if (added && added->special) {
                if (style_ == Style::InternLM2 && !prev_special) out += ' ';
                flush();
                out += t;
                prev_special = true;
            } else {
                run.push_back(std::move(t));
                prev_special = false;
            }
        }
        flush();
        if (style_ != Style::InternLM2) return out;
        // InternLM2Tokenizer prepends a space, cleans up, then drops its first character.
        return clean_up_tokenization(std::move(out));
    }

    std::string token(int32_t id) const override {
        if (const auto* a = added_.by_id(id)) return a->content;
        if (id < 0 || id >= int32_t(sp_.GetPieceSize())) return {};
        return sp_.IdToPiece(id);
    }
    std::optional<int32_t> token_id(std::string_view t) const override {
        if (const auto* a = added_.by_content(t)) return a->id;
        const std::string s(t);
        const int id = sp_.PieceToId(s);
        if (id == sp_.unk_id() && s != sp_.IdToPiece(id)) return std::nullopt;
        return id;
    }
    int32_t vocab_size() const override { return vocab_size_; }

private:
    sentencepiece::SentencePieceProcessor sp_;
    AddedVocabulary raw_split_;  // the added tokens, all matched on raw text as slow tokenizers do
    std::unique_ptr<TokenDecoder> decoder_;
    Style style_ = Style::Plain;
    bool legacy_ = false, add_prefix_space_ = true, add_bos_ = false, add_eos_ = false;
    std::string unk_token_;
    std::size_t unk_prefix_length_ = 0;
    int32_t vocab_size_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& model_file,
                                                        const TokenizerFiles& files) {
    return std::make_unique<SentencePieceTokenizer>(model_file, files);
}

}  // namespace lumen
