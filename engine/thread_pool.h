#pragma once
// A fixed set of worker threads for data-parallel loops on the CPU backend.
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

    // Calls fn(begin, end) over [0, n) split into about size() contiguous ranges of at least
    // `grain` items, the calling thread taking one of them; returns when all are done.
    // Not reentrant: fn must not call parallel_for on the same pool.
    void parallel_for(std::size_t n, std::size_t grain, const std::function<void(std::size_t, std::size_t)>& fn);

    static ThreadPool& shared();

private:
    void worker(std::size_t index);

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(std::size_t, std::size_t)>* job_ = nullptr;
    std::vector<std::pair<std::size_t, std::size_t>> ranges_;
    std::size_t generation_ = 0;
    std::size_t pending_ = 0;
    bool stop_ = false;
    std::mutex call_mutex_;  // one parallel_for at a time
};

}  // namespace lumen
