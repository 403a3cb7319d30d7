// Fuzz target: any bytes as model.safetensors.index.json, beside two small valid shards.
#include <cstddef>
#include <cstdint>

#include "engine/model/checkpoint.h"
#include "engine/util/error.h"
#include "tests/fuzz/fuzz_support.h"

LUMEN_FUZZ_JSON_MUTATOR

namespace {

// A shard holding one F32 tensor of two values.
std::string shard(const char* name) {
    const std::string header = std::string(R"({")") + name + R"(":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((header.size() >> (8 * i)) & 0xff);
    return out + header + std::string(8, '\0');
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto dir = lumen::fuzz::scratch_dir();
    static const bool made = [&] {
        lumen::fuzz::write_file(dir / "model-00001-of-00002.safetensors", shard("a"));
        lumen::fuzz::write_file(dir / "model-00002-of-00002.safetensors", shard("b"));
        return true;
    }();
    (void)made;
    lumen::fuzz::write_file(dir / "model.safetensors.index.json", {reinterpret_cast<const char*>(data), size});
    try {
        const lumen::Checkpoint checkpoint(dir);
        (void)checkpoint.parameter_count();
        for (const auto* t : checkpoint.tensors()) (void)checkpoint.get(t->name);
    } catch (const lumen::Error&) {
    }
    return 0;
}
