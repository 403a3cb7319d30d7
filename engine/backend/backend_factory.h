#pragma once
// Picks the backend for a device name: "cpu", "cuda" (the first CUDA device) or "auto" (CUDA when
// this build has it and a usable GPU is present, else the CPU).
#include <memory>
#include <string>

#include "engine/backend/backend.h"

namespace lumen {

// Throws lumen::Error for an unknown name or an unavailable device. `description` (optional)
// receives what was chosen, and why, in words.
std::unique_ptr<Backend> make_backend(const std::string& device, std::string* description = nullptr);

}  // namespace lumen
