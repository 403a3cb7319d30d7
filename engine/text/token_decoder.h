#pragma once
// The decoders of Hugging Face tokenizers (tokenizer.json's "decoder"): token strings in, text out.
// ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip and Sequence.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lumen {

class TokenDecoder {
public:
    virtual ~TokenDecoder() = default;
    virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;

    // Builds a decoder from its tokenizer.json description; null JSON gives nullptr. Throws on
    // unsupported types, naming them.
    static std::unique_ptr<TokenDecoder> from_json(const nlohmann::json& spec);
};

// The decoded text: the chain's output joined, or the tokens joined by spaces without a decoder.
std::string decode_tokens(const TokenDecoder* decoder, std::vector<std::string> tokens);

}  // namespace lumen
