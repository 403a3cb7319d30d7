#pragma once
// Text <-> token ids, exactly as Hugging Face transformers reads the same folder: tokenizer.json
// when present (the Rust `tokenizers` pipeline), else tokenizer.model through sentencepiece with
// transformers' slow-tokenizer rules. Thread-safe after loading.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/text/added_vocabulary.h"

namespace lumen {

struct EncodeOptions {
    bool add_special_tokens = true;     // BOS/EOS (or the post-processor's template) around the text
    bool split_special_tokens = false;  // true: special-token strings in the text are plain text
};

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    // Loads DIR/tokenizer.json or DIR/tokenizer.model with the config files beside them.
    static std::unique_ptr<Tokenizer> load(const std::filesystem::path& dir);

    virtual std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const = 0;
    // Decodes to valid UTF-8 (bytes that do not form characters become U+FFFD).
    virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const = 0;

    // The vocabulary string of an id ("▁Hello", "Ġworld", "<0x0A>", "<|im_end|>"); empty if unknown.
    virtual std::string token(int32_t id) const = 0;
    virtual std::optional<int32_t> token_id(std::string_view token) const = 0;
    // One more than the largest id (model vocabulary and added tokens).
    virtual int32_t vocab_size() const = 0;

    bool is_special(int32_t id) const;
    const AddedVocabulary& added_tokens() const { return added_; }

    // Special tokens as tokenizer_config.json names them (strings are empty when not set).
    const std::string& bos_token() const { return bos_token_; }
    const std::string& eos_token() const { return eos_token_; }
    std::optional<int32_t> bos_id() const { return bos_token_.empty() ? std::nullopt : token_id(bos_token_); }
    std::optional<int32_t> eos_id() const { return eos_token_.empty() ? std::nullopt : token_id(eos_token_); }
    // tokenizer_config.json's Jinja chat_template, used to recognise the model's chat family.
    const std::string& chat_template() const { return chat_template_; }

protected:
    AddedVocabulary added_;
    std::string bos_token_;
    std::string eos_token_;
    std::string chat_template_;
};

}  // namespace lumen
