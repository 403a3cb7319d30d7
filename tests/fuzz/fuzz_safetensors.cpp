// Fuzz target: any bytes as a safetensors file. Valid files parse; everything else is a lumen::Error.
#include <cstddef>
#include <cstdint>

#include "engine/util/error.h"
#include "engine/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const auto header = lumen::parse_safetensors({reinterpret_cast<const std::byte*>(data), size}, "fuzz");
        // Touch every tensor's first and last byte: the spans must lie inside the input.
        volatile uint8_t sink = 0;
        for (const auto& t : header.tensors)
            if (!t.data.empty()) sink = sink ^ uint8_t(t.data.front()) ^ uint8_t(t.data.back());
        (void)sink;
    } catch (const lumen::Error&) {
    }
    return 0;
}
