#include "engine/util/thread_pool.h"

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
    for (std::size_t i = 0; i + 1 < threads; ++i) workers_.emplace_back([this] { worker(); });
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

void ThreadPool::worker() {
    std::size_t seen = 0;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
        }
        run_chunks();
        {
            std::lock_guard lock(mutex_);
            if (--pending_ == 0) done_.notify_one();
        }
    }
}

void ThreadPool::run_chunks() {
    for (std::size_t c; (c = next_chunk_.fetch_add(1)) < chunks_;) (*job_)(n_ * c / chunks_, n_ * (c + 1) / chunks_);
}

void ThreadPool::parallel_for(std::size_t n, std::size_t grain, const std::function<void(std::size_t, std::size_t)>& fn) {
    if (n == 0) return;
    grain = std::max<std::size_t>(grain, 1);
    // A few chunks a thread, taken in turn: a thread the system holds back (a busy or shared
    // machine) delays the loop by a chunk, not by a whole share of it.
    const std::size_t chunks = std::min(size() * 4, n / grain);
    if (chunks <= 1) {
        fn(0, n);
        return;
    }
    std::lock_guard call(call_mutex_);
    {
        std::lock_guard lock(mutex_);
        job_ = &fn;
        n_ = n;
        chunks_ = chunks;
        next_chunk_ = 0;
        pending_ = workers_.size();
        ++generation_;
    }
    wake_.notify_all();
    run_chunks();
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
}

}  // namespace lumen
