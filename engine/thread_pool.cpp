#include "engine/thread_pool.h"

#include <algorithm>
#if defined(__linux__)
#include <sched.h>
#endif

namespace lumen {
namespace {

// The CPUs this process may run on (what taskset or a container allows), not all the machine's.
std::size_t usable_cpus() {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return std::size_t(std::max(1, CPU_COUNT(&set)));
#endif
    return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

ThreadPool::ThreadPool(std::size_t threads) {
    if (threads == 0) threads = usable_cpus();
    for (std::size_t i = 0; i + 1 < threads; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
}

ThreadPool& ThreadPool::shared() {
    static ThreadPool pool;
    return pool;
}

void ThreadPool::worker(std::size_t index) {
    std::size_t seen = 0;
    for (;;) {
        std::pair<std::size_t, std::size_t> range;
        const std::function<void(std::size_t, std::size_t)>* job;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            job = job_;
            range = index + 1 < ranges_.size() ? ranges_[index + 1] : std::pair<std::size_t, std::size_t>{0, 0};
        }
        if (range.first < range.second) (*job)(range.first, range.second);
        {
            std::lock_guard lock(mutex_);
            if (--pending_ == 0) done_.notify_one();
        }
    }
}

void ThreadPool::parallel_for(std::size_t n, std::size_t grain, const std::function<void(std::size_t, std::size_t)>& fn) {
    if (n == 0) return;
    grain = std::max<std::size_t>(grain, 1);
    const std::size_t parts = std::min(size(), (n + grain - 1) / grain);
    if (parts <= 1) {
        fn(0, n);
        return;
    }
    std::lock_guard call(call_mutex_);
    std::vector<std::pair<std::size_t, std::size_t>> ranges(size(), {0, 0});
    for (std::size_t p = 0; p < parts; ++p) ranges[p] = {n * p / parts, n * (p + 1) / parts};
    {
        std::lock_guard lock(mutex_);
        ranges_ = std::move(ranges);
        job_ = &fn;
        pending_ = workers_.size();
        ++generation_;
    }
    wake_.notify_all();
    fn(ranges_[0].first, ranges_[0].second);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
}

}  // namespace lumen
