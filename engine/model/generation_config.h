#pragma once
#include <filesystem>

#include "engine/backend/sampling.h"

namespace lumen {

// The sampling a model folder asks for in generation_config.json (greedy unless it sets do_sample),
// with transformers' defaults for what it leaves out.
SamplingParams load_generation_config(const std::filesystem::path& dir);

}  // namespace lumen
