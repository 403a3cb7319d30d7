// CUDA errors as the engine's one error type. A sticky error (the kernel that failed left the
// context unusable: every later call fails too) is marked so, and remembered: CUDA cannot start
// again in this process (the driver answers "busy or unavailable" even after cudaDeviceReset;
// NVIDIA's documentation says the process must be relaunched), so a backend made later says so.
#include <cuda_runtime.h>

#include <mutex>
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

namespace {
std::mutex lost_mutex;
std::string lost_because;  // empty while CUDA works
}  // namespace

void check(cudaError_t status, const char* what) {
    if (status == cudaSuccess) return;
    if (is_sticky(status)) {
        const std::string because = std::string(cudaGetErrorString(status)) + " in " + what;
        {
            std::lock_guard lock(lost_mutex);
            if (lost_because.empty()) lost_because = because;
        }
        throw Error("the GPU stopped working (" + because + "); restart Lumen to use it again, or choose the CPU in Settings",
                    Error::Scope::Device);
    }
    throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

std::string lost_in_this_process() {
    std::lock_guard lock(lost_mutex);
    return lost_because;
}

}  // namespace lumen::cuda
