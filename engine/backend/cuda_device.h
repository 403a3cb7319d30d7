#pragma once
// The CUDA backend's device side: one GPU, its stream, the memory the backend hands out, host
// uploads through pinned staging, and recorded work (CUDA graphs). Every resource is owned by an
// object that frees it, so a constructor that fails halfway leaks nothing. Built only with a CUDA
// toolkit; used by cuda_backend.cpp alone.
#include <cuda_runtime.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/util/dtype.h"

namespace lumen::cuda_backend {

std::string gib(uint64_t bytes);

// Pinned host memory, for transfers the GPU can overlap with work.
class PinnedBuffer {
public:
    explicit PinnedBuffer(std::size_t bytes = 0) { resize(bytes); }
    ~PinnedBuffer();
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    void resize(std::size_t bytes);
    std::byte* data() { return static_cast<std::byte*>(data_); }

private:
    void* data_ = nullptr;
    std::size_t size_ = 0;
};

class Stream {
public:
    Stream();
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    operator cudaStream_t() const { return stream_; }

private:
    cudaStream_t stream_ = nullptr;
};

class Event {
public:
    Event();
    ~Event();
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    operator cudaEvent_t() const { return event_; }

private:
    cudaEvent_t event_ = nullptr;
};

// What a recording is replayed for: the owner that asked (the model's forward, an encoder), its key,
// and for forward passes the batch's shape.
struct RecordingKey {
    const void* owner = nullptr;
    int64_t key = 0;
    int32_t tokens = 0, logit_rows = 0, max_blocks = 0, max_len = 0, decode = 0;
    auto operator<=>(const RecordingKey&) const = default;
};

class CudaDevice {
public:
    // Selects `device` (resetting a context an earlier sticky error left broken) and makes the stream.
    explicit CudaDevice(int device);
    ~CudaDevice();
    CudaDevice(const CudaDevice&) = delete;
    CudaDevice& operator=(const CudaDevice&) = delete;

    int index() const { return device_; }
    const std::string& name() const { return name_; }
    cudaStream_t stream() const { return stream_; }
    uint64_t free_memory() const;
    int compute_major() const { return major_; }
    int compute_minor() const { return minor_; }

    // Device memory, freed by free() or with the device. A failed allocation says what it was for.
    void* allocate(std::size_t bytes, const char* what);
    // Waits for queued work, drops the recordings that use `p`, frees it. Unknown pointers are ignored.
    void free(void* p) noexcept;
    // Device scratch for reads, ids and sampling parameters, grown as needed.
    void* scratch(std::size_t bytes);

    // Host values into device memory through the pinned staging buffers, converted on the way on
    // all cores while the previous chunk is being copied. Returns once the host values have been
    // read; the copies are ordered before later work on the stream.
    void upload(const std::byte* src, DType from, std::size_t n, std::byte* dst, DType to, const char* what);

    // Recorded work. While recording, ops name the memory they touch (uses()); the recording is
    // dropped when any of that memory, or any of `always`, is freed, and only then.
    bool recording() const { return recording_; }
    void uses(std::initializer_list<const void*> pointers);
    // Runs `ops` directly the first time `key` is seen when `second_time` (the first run makes
    // cuBLASLt's plans and sets kernel attributes, which a capture must not), else records it, and
    // replays the recording from then on.
    void run_recorded(const RecordingKey& key, bool second_time, std::initializer_list<const void*> always,
                      const std::function<void()>& ops);

private:
    struct Recording {
        bool seen = false;
        cudaGraphExec_t exec = nullptr;
        std::vector<const void*> uses;  // allocation bases
    };
    cudaGraphExec_t capture(const std::function<void()>& ops);
    // The allocation `p` points into, or nullptr.
    const void* allocation_of(const void* p) const;
    static void convert(const std::byte* src, DType from, std::size_t n, std::byte* dst, DType to);

    static constexpr std::size_t kStagingBytes = std::size_t(64) << 20;

    int device_;
    std::string name_;
    int major_ = 0, minor_ = 0;
    Stream stream_;
    PinnedBuffer staging_[2];
    Event staging_done_[2];
    std::map<const void*, std::size_t> allocations_;  // base -> bytes
    void* scratch_ = nullptr;
    std::size_t scratch_bytes_ = 0;
    std::map<RecordingKey, Recording> recordings_;
    bool recording_ = false;
    std::set<const void*> recording_uses_;
};

}  // namespace lumen::cuda_backend
