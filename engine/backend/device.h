#pragma once
// The GPUs this build can run on, as the status bar, the memory estimate and `lumen-cli devices`
// see them: read through the backend layer, so that nothing above it touches the CUDA runtime.
#include <cstdint>
#include <string>
#include <vector>

namespace lumen {

struct DeviceInfo {
    std::string id;    // "cuda:0", or "cpu"
    std::string name;  // "NVIDIA H100 80GB HBM3", or the CPU's thread count
    int compute_major = 0;
    int compute_minor = 0;
    uint64_t total_memory = 0;
    uint64_t free_memory = 0;
};

// Every GPU the CUDA runtime reports; empty with `why` set when there is none (no driver, no GPU,
// or a build without the CUDA backend).
std::vector<DeviceInfo> list_gpus(std::string* why = nullptr);

// FP8 products need compute capability 8.9 or newer (Ada, Hopper and later); the CPU runs FP8
// weights only as a reference (fp32 arithmetic on the decoded weights).
inline bool runs_fp8(const DeviceInfo& d) { return d.compute_major * 10 + d.compute_minor >= 89; }
// Why a device cannot run FP8, in users' words.
std::string fp8_unsupported_message(const DeviceInfo& d);

// The memory the system could give a new program now (Linux's MemAvailable); 0 when unknown.
uint64_t available_system_memory();

}  // namespace lumen
