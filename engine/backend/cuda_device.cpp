#include "engine/backend/cuda_device.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "engine/util/error.h"
#include "engine/util/thread_pool.h"
#include "kernels/ops.h"

namespace lumen::cuda_backend {

using cuda::check;

std::string gib(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(1ull << 30));
    return buf;
}

PinnedBuffer::~PinnedBuffer() {
    if (data_) cudaFreeHost(data_);
}

void PinnedBuffer::resize(std::size_t bytes) {
    if (bytes <= size_) return;
    if (data_) cudaFreeHost(data_);
    data_ = nullptr;
    size_ = 0;
    check(cudaMallocHost(&data_, bytes), "cudaMallocHost");
    size_ = bytes;
}

Stream::Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
Stream::~Stream() { cudaStreamDestroy(stream_); }

Event::Event() { check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate"); }
Event::~Event() { cudaEventDestroy(event_); }

namespace {

// Makes `device` current before anything is created on it.
int select_device(int device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        cudaGetLastError();
        throw Error("no usable NVIDIA GPU (the CUDA driver reports none); use --device cpu");
    }
    if (device < 0 || device >= count) throw Error("CUDA device " + std::to_string(device) + " does not exist");
    if (const std::string lost = cuda::lost_in_this_process(); !lost.empty())
        throw Error("the GPU stopped working earlier (" + lost + "); restart Lumen to use it again, or choose the CPU in "
                    "Settings",
                    Error::Scope::Device);
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaFree(nullptr), "starting CUDA on the GPU");
    return device;
}

}  // namespace

CudaDevice::CudaDevice(int device) : device_(select_device(device)) {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    name_ = prop.name;
    major_ = prop.major;
    minor_ = prop.minor;
    for (auto& b : staging_) b.resize(kStagingBytes);
}

CudaDevice::~CudaDevice() {
    cudaStreamSynchronize(stream_);
    for (auto& [key, r] : recordings_)
        if (r.exec) cudaGraphExecDestroy(r.exec);
    for (auto& [p, bytes] : allocations_) cudaFree(const_cast<void*>(p));
}

uint64_t CudaDevice::free_memory() const {
    size_t free_bytes = 0, total = 0;
    check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
    return free_bytes;
}

void* CudaDevice::allocate(std::size_t bytes, const char* what) {
    void* p = nullptr;
    if (cudaMalloc(&p, std::max<std::size_t>(bytes, 1)) != cudaSuccess) {
        cudaGetLastError();
        throw Error(std::string("out of GPU memory for ") + what + ": " + gib(bytes) + " more needed, " + gib(free_memory()) + " free");
    }
    allocations_[p] = bytes;
    return p;
}

void CudaDevice::free(void* p) noexcept {
    const auto it = allocations_.find(p);
    if (it == allocations_.end()) return;
    cudaStreamSynchronize(stream_);
    // Only the recordings that touch this memory go: evicting one image's embeddings keeps every
    // decode step's recording.
    for (auto r = recordings_.begin(); r != recordings_.end();) {
        if (std::find(r->second.uses.begin(), r->second.uses.end(), p) != r->second.uses.end()) {
            if (r->second.exec) cudaGraphExecDestroy(r->second.exec);
            r = recordings_.erase(r);
        } else {
            ++r;
        }
    }
    if (p == scratch_) scratch_ = nullptr, scratch_bytes_ = 0;
    cudaFree(p);
    allocations_.erase(it);
}

void* CudaDevice::scratch(std::size_t bytes) {
    if (bytes > scratch_bytes_) {
        free(scratch_);
        const std::size_t size = std::max<std::size_t>(bytes, 1 << 20);
        scratch_ = allocate(size, "scratch");
        scratch_bytes_ = size;
    }
    return scratch_;
}

const void* CudaDevice::allocation_of(const void* p) const {
    auto it = allocations_.upper_bound(p);
    if (it == allocations_.begin()) return nullptr;
    --it;
    const auto* base = static_cast<const std::byte*>(it->first);
    return static_cast<const std::byte*>(p) < base + std::max<std::size_t>(it->second, 1) ? it->first : nullptr;
}

void CudaDevice::uses(std::initializer_list<const void*> pointers) {
    if (!recording_) return;
    for (const void* p : pointers)
        if (const void* base = p ? allocation_of(p) : nullptr) recording_uses_.insert(base);
}

void CudaDevice::run_recorded(const RecordingKey& key, bool second_time, std::initializer_list<const void*> always,
                              const std::function<void()>& ops) {
    Recording& r = recordings_[key];
    if (!r.exec && second_time && !r.seen) {
        r.seen = true;
        ops();
        return;
    }
    if (!r.exec) {
        // `always` goes in the recording's uses before capture starts (uses() notes only during
        // one), so that freeing any of it drops the recording.
        recording_uses_.clear();
        for (const void* p : always)
            if (const void* base = p ? allocation_of(p) : nullptr) recording_uses_.insert(base);
        r.exec = capture(ops);
        r.uses.assign(recording_uses_.begin(), recording_uses_.end());
    }
    check(cudaGraphLaunch(r.exec, stream_), "cudaGraphLaunch");
}

cudaGraphExec_t CudaDevice::capture(const std::function<void()>& ops) {
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    recording_ = true;
    try {
        ops();
    } catch (...) {
        recording_ = false;
        cudaStreamEndCapture(stream_, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
    }
    recording_ = false;
    check(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(status, "cudaGraphInstantiate");
    return exec;
}

void CudaDevice::upload(const std::byte* src, DType from, std::size_t n, std::byte* dst, DType to, const char* what) {
    const std::size_t out_elem = dtype_size(to), in_elem = dtype_size(from);
    // Conversions (an image's fp32 pixels) go in at least four chunks once there are a few MiB,
    // so that converting one overlaps copying another; same-type weights in chunks as large
    // as the staging buffer (one tensor's copy then overlaps the next tensor's staging).
    std::size_t chunk = kStagingBytes / std::max(out_elem, in_elem);
    if (from != to) chunk = std::min(chunk, std::max<std::size_t>(n / 4, std::size_t(1) << 20));
    for (std::size_t first = 0, i = 0; first < n; first += chunk, i ^= 1) {
        const std::size_t count = std::min(chunk, n - first);
        check(cudaEventSynchronize(staging_done_[i]), "cudaEventSynchronize");
        std::byte* stage = staging_[i].data();
        ThreadPool::shared().parallel_for(count, std::size_t(1) << 16, [&](std::size_t begin, std::size_t end) {
            convert(src + (first + begin) * in_elem, from, end - begin, stage + begin * out_elem, to);
        });
        check(cudaMemcpyAsync(dst + first * out_elem, stage, count * out_elem, cudaMemcpyHostToDevice, stream_), what);
        check(cudaEventRecord(staging_done_[i], stream_), "cudaEventRecord");
    }
}

// Host-side element conversion into the staging buffer.
void CudaDevice::convert(const std::byte* src, DType from, std::size_t n, std::byte* dst, DType to) {
    if (from == to) {
        std::memcpy(dst, src, n * dtype_size(from));
        return;
    }
    // The types are chosen once, outside the loop, so that it compiles to straight conversions.
    auto with_reader = [&](auto&& body) {
        switch (from) {
        case DType::F32: return body([&](std::size_t i) { float v; std::memcpy(&v, src + 4 * i, 4); return v; });
        case DType::BF16: return body([&](std::size_t i) { uint16_t h; std::memcpy(&h, src + 2 * i, 2); return bf16_to_f32(h); });
        case DType::F16: return body([&](std::size_t i) { uint16_t h; std::memcpy(&h, src + 2 * i, 2); return f16_to_f32(h); });
        default: throw Error("CUDA backend: cannot convert weights of type " + std::string(dtype_name(from)));
        }
    };
    with_reader([&](auto read) {
        switch (to) {
        case DType::F32:
            for (std::size_t i = 0; i < n; ++i) {
                const float v = read(i);
                std::memcpy(dst + 4 * i, &v, 4);
            }
            break;
        case DType::BF16:
            for (std::size_t i = 0; i < n; ++i) {
                const uint16_t h = f32_to_bf16(read(i));
                std::memcpy(dst + 2 * i, &h, 2);
            }
            break;
        default:
            for (std::size_t i = 0; i < n; ++i) {
                const uint16_t h = f32_to_f16(read(i));
                std::memcpy(dst + 2 * i, &h, 2);
            }
            break;
        }
    });
}

}  // namespace lumen::cuda_backend
