#include "engine/backend/backend_factory.h"

#include "engine/util/error.h"
#include "engine/util/thread_pool.h"
#ifdef LUMEN_HAVE_CUDA
#include "engine/backend/cuda_backend.h"
#include "kernels/device_info.h"
#include "kernels/ops.h"
#endif

namespace lumen {

std::unique_ptr<Backend> make_backend(const std::string& device, std::string* description) {
    if (device != "cpu" && device != "cuda" && device != "auto")
        throw Error("unknown device '" + device + "' (choose cpu, cuda or auto)");
    const std::string cpu = "cpu (" + std::to_string(ThreadPool::shared().size()) + " threads)";
#ifdef LUMEN_HAVE_CUDA
    if (device != "cpu") {
        std::string why;
        if (const std::string lost = cuda::lost_in_this_process(); !lost.empty() && device == "auto") {
            // CUDA cannot start again in this process: the CPU, and why.
            if (description) *description = cpu + " (the GPU stopped working earlier; restart Lumen to use it)";
            return make_cpu_backend();
        }
        const auto gpus = cuda::list_devices(&why);
        if (!gpus.empty()) {
            auto backend = make_cuda_backend(0);
            if (description) *description = backend->name();
            return backend;
        }
        if (device == "cuda") throw Error(why + "; use --device cpu");
        if (description) *description = cpu + " (" + why + ")";
        return make_cpu_backend();
    }
#else
    if (device == "cuda") throw Error("this build of Lumen has no CUDA backend (configured without a CUDA toolkit); use --device cpu");
    if (description && device == "auto") *description = cpu + " (this build has no CUDA backend)";
    else if (description) *description = cpu;
    return make_cpu_backend();
#endif
    if (description) *description = cpu;
    return make_cpu_backend();
}

}  // namespace lumen
