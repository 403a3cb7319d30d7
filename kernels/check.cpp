// CUDA errors as the engine's one error type. A sticky error (the kernel that failed left the
// context unusable: every later call fails too) is marked so, and the engine stops serving until the
// model is loaded again.
#include <cuda_runtime.h>

#include <string>

#include "engine/util/error.h"
#include "kernels/ops.h"

namespace lumen::cuda {

bool is_sticky(cudaError_t status) {
    switch (status) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorLaunchTimeout:
        return true;
    default:
        return false;
    }
}

void check(cudaError_t status, const char* what) {
    if (status == cudaSuccess) return;
    if (is_sticky(status))
        throw Error(std::string("the GPU stopped working (") + cudaGetErrorString(status) + " in " + what +
                        "); load the model again to go on",
                    Error::Scope::Device);
    throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

}  // namespace lumen::cuda
