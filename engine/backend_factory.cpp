#include "engine/backend_factory.h"

#include "engine/error.h"
#include "engine/thread_pool.h"

namespace lumen {

std::unique_ptr<Backend> make_backend(const std::string& device, std::string* description) {
    if (device != "cpu" && device != "cuda" && device != "auto")
        throw Error("unknown device '" + device + "' (choose cpu, cuda or auto)");
    const std::string cpu = "cpu (" + std::to_string(ThreadPool::shared().size()) + " threads)";
    if (device == "cuda") throw Error("this build of Lumen has no CUDA backend yet; use --device cpu (or auto)");
    if (description) *description = device == "auto" ? cpu + "; no CUDA backend in this build" : cpu;
    return make_cpu_backend();
}

}  // namespace lumen
