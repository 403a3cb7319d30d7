#pragma once
// The NVIDIA GPUs this process can use, as the CUDA runtime sees them.
#include <cstdint>
#include <string>
#include <vector>

namespace lumen::cuda {

struct DeviceInfo {
    int index = 0;
    std::string name;
    int compute_major = 0;
    int compute_minor = 0;
    uint64_t total_memory = 0;
    uint64_t free_memory = 0;
};

// Every device the runtime reports; empty with `why` set when there is none (no driver, no GPU).
std::vector<DeviceInfo> list_devices(std::string* why = nullptr);

// The current device's compute capability (looked up once per device).
struct DeviceTraits {
    int major = 0, minor = 0;
};
const DeviceTraits& current_device();

}  // namespace lumen::cuda
