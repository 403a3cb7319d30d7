#pragma once
// A fixed set of worker threads for data-parallel loops on the CPU backend.
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lumen {

class ThreadPool {
public:
    explicit ThreadPool(std::size_t threads = 0);  // 0: one per CPU the process may use
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    std::size_t size() const { return workers_.size() + 1; }

    // Calls fn(begin, end) over [0, n) split into contiguous ranges of at least `grain` items (up
    // to four a thread; all of [0, n) at once when it is shorter than `grain`), which the threads,
    // the calling one included, take in turn; returns when all are done.
    // Not reentrant: fn must not call parallel_for on the same pool.
    void parallel_for(std::size_t n, std::size_t grain, const std::function<void(std::size_t, std::size_t)>& fn);

    static ThreadPool& shared();

private:
    void worker();
    void run_chunks();  // takes chunks of the current job until none is left

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(std::size_t, std::size_t)>* job_ = nullptr;
    std::size_t n_ = 0, chunks_ = 0;
    std::atomic<std::size_t> next_chunk_ = 0;
    std::size_t generation_ = 0;
    std::size_t pending_ = 0;
    bool stop_ = false;
    std::mutex call_mutex_;  // one parallel_for at a time
};

}  // namespace lumen
