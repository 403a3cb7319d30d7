#pragma once
// The subcommands of lumen-cli; each takes the arguments after its name and returns an exit code.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/weight_formats.h"
#include "vision/encoder.h"

namespace lumen::cli {

int run_models(const std::vector<std::string>& args);
int run_tokenize(const std::vector<std::string>& args);
int run_devices(const std::vector<std::string>& args);
int run_generate(const std::vector<std::string>& args);
int run_chat(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_perplexity(const std::vector<std::string>& args);
int run_quantize(const std::vector<std::string>& args);
int run_serve(const std::vector<std::string>& args);
int run_pull(const std::vector<std::string>& args);
class Args;
int run_bench_vision(const Args& args);  // bench --vision

// --weights auto|16|int8|int4|fp8 and --group-size N, as the commands that load a model take them.
WeightChoice weight_choice(const Args& args);
inline constexpr const char* kWeightsHelp =
    "  --weights auto|16|int8|int4|fp8  auto (or 16): as stored; int8 / int4 / fp8 quantize a 16-bit folder at load\n"
    "                                (fp8: compute capability 8.9+; on the CPU a reference, no faster than 16-bit)\n"
    "  --group-size N                inputs per 4-bit scale and zero with --weights int4 (default 128)\n";

// --vision-weights auto|16|fp8: the vision tower's linear layers as stored, or FP8 made at load.
vision::TowerWeights vision_weights(const Args& args);
inline constexpr const char* kVisionWeightsHelp =
    "  --vision-weights auto|16|fp8  a vision-language model's image encoder: as stored (auto or 16), or its\n"
    "                                layers' products in FP8 (compute capability 8.9+; on the CPU a reference)\n";

// --quant-policy 0|8|4: the KV cache in the compute type, or 8- or 4-bit codes (LMDeploy's name).
int32_t quant_policy(const Args& args);
inline constexpr const char* kQuantPolicyHelp =
    "  --quant-policy 0|8|4          KV cache: 16-bit (0), or 8- or 4-bit with a scale and zero per token and head\n";

// Formatting shared by the commands' tables.
std::string format_count(long long n);     // 1234567 -> "1,234,567"
std::string format_bytes(unsigned long long n);  // 1536 -> "1.5 KiB"

}  // namespace lumen::cli
