// Fuzz target: any bytes as config.json, its quantization_config included.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/util/error.h"
#include "engine/model/model_config.h"
#include "engine/model/weight_formats.h"

#include "tests/fuzz/fuzz_support.h"

LUMEN_FUZZ_JSON_MUTATOR

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const auto config = lumen::parse_model_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
        (void)config.text.parameter_count();
        (void)lumen::parse_quantization(config.raw, nullptr, "fuzz").describe();
    } catch (const lumen::Error&) {
    }
    return 0;
}
