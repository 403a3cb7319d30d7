// Fuzz target: any bytes as generation_config.json.
#include <cstddef>
#include <cstdint>

#include "engine/model/generation_config.h"
#include "engine/util/error.h"
#include "tests/fuzz/fuzz_support.h"

LUMEN_FUZZ_JSON_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto dir = lumen::fuzz::scratch_dir();
    lumen::fuzz::write_file(dir / "generation_config.json", {reinterpret_cast<const char*>(data), size});
    try {
        (void)lumen::load_generation_config(dir);
    } catch (const lumen::Error&) {
    }
    return 0;
}
