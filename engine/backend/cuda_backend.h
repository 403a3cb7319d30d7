#pragma once
// The CUDA backend: kernels/ and cuBLAS behind the Backend interface. Built only with a CUDA toolkit.
#include <memory>

#include "engine/backend/backend.h"

namespace lumen {

// Throws lumen::Error when no usable device exists.
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

}  // namespace lumen
