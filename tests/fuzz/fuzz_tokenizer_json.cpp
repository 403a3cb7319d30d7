// Fuzz target: any bytes as tokenizer.json; a tokenizer that loads must also encode and decode.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/util/error.h"
#include "engine/text/hf_tokenizer.h"

#include "tests/fuzz/fuzz_support.h"

LUMEN_FUZZ_JSON_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const lumen::TokenizerFiles files;
        const auto tok = lumen::make_hf_tokenizer(std::string(reinterpret_cast<const char*>(data), size), files);
        for (const char* text : {"Hello world", " <s>\n\t 你好 👍🏽 ", "", "\xff\xfe broken utf-8 \xe4\xbd"}) {
            const auto ids = tok->encode(text);
            (void)tok->decode(ids, false);
            (void)tok->decode(ids, true);
        }
    } catch (const lumen::Error&) {
    }
    return 0;
}
