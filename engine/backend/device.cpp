#include "engine/backend/device.h"

#include <fstream>

#ifdef LUMEN_HAVE_CUDA
#include "kernels/device_info.h"
#endif

namespace lumen {

std::vector<DeviceInfo> list_gpus(std::string* why) {
    std::vector<DeviceInfo> out;
#ifdef LUMEN_HAVE_CUDA
    for (const auto& d : cuda::list_devices(why))
        out.push_back({"cuda:" + std::to_string(d.index), d.name, d.compute_major, d.compute_minor, d.total_memory, d.free_memory});
#else
    if (why) *why = "this build of Lumen has no CUDA backend (configured without a CUDA toolkit)";
#endif
    return out;
}

uint64_t available_system_memory() {
    std::ifstream f("/proc/meminfo");
    std::string key, unit;
    uint64_t kb = 0;
    while (f >> key >> kb >> unit)
        if (key == "MemAvailable:") return kb * 1024;
    return 0;
}

std::string fp8_unsupported_message(const DeviceInfo& d) {
    const std::string which = d.id == "cpu" || d.id.empty()
                                  ? "this computer runs Lumen on its CPU"
                                  : d.name + " has compute capability " + std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor);
    return "FP8 weights need an NVIDIA GPU of compute capability 8.9 or newer (GeForce RTX 40 series, L4, L40, H100 or later); " + which + ".";
}

}  // namespace lumen
