#pragma once
// Linear weights as checkpoints store them (16-bit, AWQ, GPTQ, compressed-tensors) re-laid into
// the backend's formats (Weight::Format), and quantization at load. Everything here runs on the
// host before upload; the backends only ever see the canonical formats.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"

namespace lumen {

// How a folder's linear weights are stored, from config.json's quantization_config (or GPTQ's
// older quantize_config.json).
struct Quantization {
    // Fp8: transformers' "fp8" quant_method (E4M3 weights, block scales); compressed-tensors
    // "float-quantized" is CompressedTensors with `floating`.
    enum class Method { None, Awq, Gptq, CompressedTensors, Fp8 };
    Method method = Method::None;
    int32_t bits = 16;
    int32_t group_size = 0;   // as declared; 0: per output channel (the tensors' shapes decide at load)
    int32_t block_rows = 0;   // FP8 block scales: output rows a scale covers (group_size: its inputs)
    bool symmetric = false;
    bool gptq_v2 = false;     // GPTQ zeros stored as they are (v1 stores zero - 1)
    bool floating = false;    // FP8 (E4M3) weights

    bool quantized() const { return method != Method::None; }
    // In users' words: "AWQ 4-bit, groups of 128".
    std::string describe() const;
    // Short, for a table's column: "AWQ 4-bit g128".
    std::string label() const;
};

// Reads the quantization of a config.json (already parsed); `quantize_config` is GPTQ's separate
// file where a folder has one. Throws lumen::Error naming `source` and what is supported for any
// other method, bit width or layout.
Quantization parse_quantization(const nlohmann::json& config, const nlohmann::json* quantize_config, const std::string& source);
// The same for a folder (reads quantize_config.json when config.json has no quantization_config).
Quantization load_quantization(const std::filesystem::path& dir, const nlohmann::json& config);

// The weights a user asks for: as stored, or a 16-bit folder quantized at load.
struct WeightChoice {
    enum class Kind { AsStored, Int8, Int4, Fp8 };
    Kind kind = Kind::AsStored;
    int32_t group_size = 128;  // Int4
    // "auto", "16", "int8", "int4", "fp8" (lumen::Error for anything else).
    static WeightChoice parse(const std::string& name, int32_t group_size = 128);
    // "as stored", "8-bit at load", "4-bit (groups of 128) at load", "FP8 at load"
    std::string describe() const;
};

// One linear weight on the host, [rows = out_features, cols = in_features], in a Weight::Format.
struct HostWeight {
    Weight::Format format = Weight::Format::Dense;
    int64_t rows = 0, cols = 0;
    int32_t group_size = 0;
    DType dtype = DType::F32;            // dense: the values' type; quantized: the scales' type
    const std::byte* mapped = nullptr;   // dense values used where the checkpoint maps them
    std::vector<std::byte> values, scales;
    std::vector<uint8_t> zeros;
    std::vector<int32_t> input_order;

    const std::byte* dense_data() const { return mapped ? mapped : values.data(); }
    uint64_t bytes() const;  // what it costs in memory as laid out
};

// The linear weight of `module` (e.g. "model.layers.0.mlp.down_proj") with the expected shape,
// whatever format the checkpoint stores it in. Throws lumen::Error naming the tensor.
HostWeight read_linear(const Checkpoint& checkpoint, const Quantization& quantization, const std::string& module, int64_t rows,
                       int64_t cols);
// True when `module`'s weight is present in any format (for checks that do not read it).
bool has_linear(const Checkpoint& checkpoint, const std::string& module);

// Rows [first, first + count) of several weights stacked into one (fused q/k/v, gate/up). Parts of
// different formats are dequantized to fp32 first.
struct RowRange {
    const HostWeight* weight;
    int64_t first, count;
};
HostWeight concat_rows(const std::vector<RowRange>& parts);

// Round-to-nearest quantization of a dense weight: 4-bit asymmetric in groups (AutoAWQ's formula:
// scale = (max - min) / 15, zero = round(-min / scale)) or 8-bit symmetric per output channel.
HostWeight quantize_int4(const HostWeight& dense, int32_t group_size);
HostWeight quantize_int8(const HostWeight& dense);
// FP8 E4M3 per output channel: scale = max |w| / 448, codes rounded to nearest even.
HostWeight quantize_fp8(const HostWeight& dense);

// The weight as fp32 values, [rows, cols], as the CPU backend computes with it.
std::vector<float> dequantize(const HostWeight& w);

}  // namespace lumen
