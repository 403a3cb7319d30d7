#include "engine/util/error.h"
#include "kernels/device_info.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <mutex>

#include "kernels/device_common.cuh"

namespace lumen::cuda {

std::vector<DeviceInfo> list_devices(std::string* why) {
    std::vector<DeviceInfo> out;
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        if (why) *why = std::string("no usable NVIDIA GPU: ") + cudaGetErrorString(err);
        cudaGetLastError();  // clear the sticky error so later calls start clean
        return out;
    }
    for (int i = 0; i < count; ++i) {
        cudaDeviceProp prop{};
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
        DeviceInfo d;
        d.index = i;
        d.name = prop.name;
        d.compute_major = prop.major;
        d.compute_minor = prop.minor;
        d.total_memory = prop.totalGlobalMem;
        size_t free_bytes = 0, total_bytes = 0;
        if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
            d.free_memory = free_bytes;
        out.push_back(d);
    }
    if (out.empty() && why) *why = "no NVIDIA GPU found";
    return out;
}

const DeviceTraits& current_device() {
    // Asked on every prompt forward and layer: each device's answer is looked up once.
    static std::once_flag asked[64];
    static DeviceTraits traits[64];
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    if (device < 0 || device >= 64) throw lumen::Error("more than 64 CUDA devices");
    std::call_once(asked[device], [device] {
        DeviceTraits& t = traits[device];
        check(cudaDeviceGetAttribute(&t.major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
        check(cudaDeviceGetAttribute(&t.minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
    });
    return traits[device];
}

namespace detail {

bool early_launch_supported() {
    static const bool disabled = std::getenv("LUMEN_NO_EARLY_LAUNCH") != nullptr;
    return !disabled && current_device().major >= 9;
}

}  // namespace detail

namespace {

__global__ void read_kernel(const float4* p, int64_t n, float* sink) {
    float s = 0.0f;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float4 v = p[i];
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 12345.678f) *sink = s;  // keeps the loads
}


}  // namespace

double read_bandwidth(void* buffer, int64_t bytes, cudaStream_t s) {
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    const int64_t n = bytes / 16;
    float* sink = static_cast<float*>(buffer);
    read_kernel<<<1024, 512, 0, s>>>(static_cast<const float4*>(buffer), n, sink);  // warm-up
    float best = 1e30f;
    for (int rep = 0; rep < 5; ++rep) {
        check(cudaEventRecord(start, s), "cudaEventRecord");
        read_kernel<<<2048, 512, 0, s>>>(static_cast<const float4*>(buffer), n, sink);
        check(cudaEventRecord(stop, s), "cudaEventRecord");
        check(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0;
        check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        best = std::min(best, ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return double(n) * 16.0 / (double(best) / 1000.0);
}

}  // namespace lumen::cuda
