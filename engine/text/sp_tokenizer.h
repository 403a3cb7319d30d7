#pragma once
// A sentencepiece tokenizer.model, with the rules transformers' slow tokenizers add around it:
// added and special tokens are cut out of the text first; LlamaTokenizer's `legacy` and
// `add_prefix_space` handling; add_bos_token / add_eos_token.
#include <memory>

#include "engine/text/tokenizer.h"
#include "engine/text/tokenizer_files.h"

namespace lumen {

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& model_file,
                                                        const TokenizerFiles& files);

// Throws lumen::Error ("tokenizer.model: ...") when the serialized ModelProto's character maps
// would make libsentencepiece read outside them (it checks them only loosely, and crashes).
void check_sentencepiece_model(const std::string& serialized_model);

// The serialized ModelProto with normalizer_spec.add_dummy_prefix set to `value` (what
// transformers does to a Llama model when legacy is false). Throws on a malformed proto.
std::string with_dummy_prefix(const std::string& serialized_model, bool value);

}  // namespace lumen
