#pragma once
// A tokenizer.json (Hugging Face `tokenizers`) pipeline: added tokens, normalizer, pre-tokenizer,
// BPE, post-processor and decoder, with the class-level changes transformers makes when it loads
// one (see apply_transformers_class in hf_tokenizer.cpp).
#include <memory>
#include <string>

#include "engine/text/tokenizer.h"
#include "engine/text/tokenizer_files.h"

namespace lumen {

// `json_text` is the content of tokenizer.json; `files` the configuration beside it.
std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& json_text, const TokenizerFiles& files);

}  // namespace lumen
