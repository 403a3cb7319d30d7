// Fuzz target: any bytes as tokenizer.model. The check Lumen runs before libsentencepiece must
// refuse whatever would make libsentencepiece read out of bounds; a model that loads must encode
// and decode.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/text/tokenizer.h"
#include "engine/util/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto dir = lumen::fuzz::scratch_dir();
    lumen::fuzz::write_file(dir / "tokenizer.model", {reinterpret_cast<const char*>(data), size});
    try {
        const auto tok = lumen::Tokenizer::load(dir);
        for (const char* text : {"Hello world", " \xe2\x96\x81 ", "", "\xff\xfe broken \xe4\xbd", "ＡＢＣ ﬁ"}) {
            const auto ids = tok->encode(text);
            (void)tok->decode(ids, false);
        }
    } catch (const lumen::Error&) {
    }
    return 0;
}
