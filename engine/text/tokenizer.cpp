#include "engine/text/tokenizer.h"

#include "engine/util/error.h"
#include "engine/text/hf_tokenizer.h"
#include "engine/text/sp_tokenizer.h"
#include "engine/util/text_file.h"
#include "engine/text/tokenizer_files.h"

namespace lumen {

bool Tokenizer::is_special(int32_t id) const {
    const auto* t = added_.by_id(id);
    return t && t->special;
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::filesystem::path& dir) {
    require_folder(dir);
    const TokenizerFiles files = TokenizerFiles::read(dir);
    if (const auto json = read_text_file(dir / "tokenizer.json", kTokenizerFile)) {
        try {
            return make_hf_tokenizer(*json, files);
        } catch (const Error& e) {
            throw Error((dir / "tokenizer.json").string() + ": " + e.what());
        }
    }
    if (std::filesystem::exists(dir / "tokenizer.model")) return make_sentencepiece_tokenizer(dir / "tokenizer.model", files);
    throw Error(dir.string() + ": no tokenizer here (a model folder has tokenizer.json or tokenizer.model)");
}

}  // namespace lumen
