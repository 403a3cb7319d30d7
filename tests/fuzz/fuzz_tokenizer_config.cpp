// Fuzz target: the files beside a tokenizer. The first byte picks which one the rest becomes
// (tokenizer_config.json, added_tokens.json or special_tokens_map.json); the tokenizer built
// with them must encode and decode.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/text/tokenizer.h"
#include "engine/util/error.h"
#include "tests/fuzz/fuzz_support.h"

LUMEN_FUZZ_JSON_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const auto dir = lumen::fuzz::scratch_dir();
    static const bool made = [&] {
        lumen::fuzz::write_file(dir / "tokenizer.json", lumen::fuzz::tiny_tokenizer_json());
        return true;
    }();
    (void)made;
    static const char* const kFiles[] = {"tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"};
    for (const char* f : kFiles) std::filesystem::remove(dir / f);
    lumen::fuzz::write_file(dir / kFiles[data[0] % 3], {reinterpret_cast<const char*>(data + 1), size - 1});
    try {
        const auto tok = lumen::Tokenizer::load(dir);
        for (const char* text : {"<s>Hello</s> world<image>", "", "\xff <unk> \xe4\xbd"}) {
            const auto ids = tok->encode(text);
            (void)tok->decode(ids, true);
            (void)tok->decode(ids, false);
        }
    } catch (const lumen::Error&) {
    }
    return 0;
}
