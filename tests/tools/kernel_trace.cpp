// A development tool, not part of the product: preloaded into any CUDA program, it records the GPU
// time of every kernel through CUPTI (also inside CUDA graphs, which LUMEN_PROFILE's events cannot
// see) and prints a table per kernel when the program exits.
//   LD_PRELOAD=build/tests/liblumen_kernel_trace.so lumen-cli bench ...
// KERNEL_TRACE_FROM=N skips the first N kernels (warm-up, prompt) of the run.
// Kernels started early (programmatic dependent launch) count their wait for the previous kernel
// as their own time: trace with LUMEN_NO_EARLY_LAUNCH=1 to see each kernel alone.
#include <cupti.h>

#include <cxxabi.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Totals {
    uint64_t calls = 0, nanoseconds = 0;
};

struct Trace {
    std::mutex mutex;
    std::map<std::string, Totals> by_kernel;
    uint64_t seen = 0, skip = 0, first_start = 0, last_end = 0, busy = 0;
};

Trace& trace() {
    static Trace* t = new Trace;  // outlives every static destructor that might flush records
    return *t;
}

// Readable names: demangled, template arguments kept (they tell the variants apart), the
// namespaces and parameter list dropped.
std::string readable(const char* mangled) {
    int status = 0;
    std::unique_ptr<char, decltype(&std::free)> d(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), &std::free);
    std::string name = status == 0 && d ? d.get() : mangled;
    for (const char* ns : {"lumen::cuda::", "(anonymous namespace)::", "detail::", "void "})
        for (std::size_t at; (at = name.find(ns)) != std::string::npos;) name.erase(at, std::string(ns).size());
    int depth = 0;
    for (std::size_t i = 0; i < name.size(); ++i) {
        if (name[i] == '<') ++depth;
        if (name[i] == '>') --depth;
        if (name[i] == '(' && depth == 0) return name.substr(0, i);
    }
    return name;
}

void CUPTIAPI give_buffer(uint8_t** buffer, size_t* size, size_t* max_records) {
    *size = std::size_t(8) << 20;
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
    *max_records = 0;
}

void CUPTIAPI take_buffer(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    Trace& t = trace();
    CUpti_Activity* record = nullptr;
    std::lock_guard lock(t.mutex);
    while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
        if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        if (t.seen++ < t.skip) continue;
        Totals& totals = t.by_kernel[readable(k->name)];
        ++totals.calls;
        totals.nanoseconds += k->end - k->start;
        if (t.first_start == 0 || k->start < t.first_start) t.first_start = k->start;
        t.last_end = std::max<uint64_t>(t.last_end, k->end);
        t.busy += k->end - k->start;
    }
    std::free(buffer);
}

__attribute__((constructor)) void start() {
    if (const char* from = std::getenv("KERNEL_TRACE_FROM")) trace().skip = std::strtoull(from, nullptr, 10);
    if (cuptiActivityRegisterCallbacks(give_buffer, take_buffer) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS)
        std::fprintf(stderr, "kernel_trace: CUPTI would not start\n");
}

__attribute__((destructor)) void finish() {
    cuptiActivityFlushAll(1);
    Trace& t = trace();
    std::lock_guard lock(t.mutex);
    std::vector<std::pair<std::string, Totals>> rows(t.by_kernel.begin(), t.by_kernel.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.nanoseconds > b.second.nanoseconds; });
    std::fprintf(stderr, "\nkernel_trace: %llu kernels, %.3f ms of kernel time over %.3f ms from first start to last end\n",
                 static_cast<unsigned long long>(t.seen - std::min(t.seen, t.skip)), double(t.busy) / 1e6,
                 double(t.last_end - t.first_start) / 1e6);
    std::fprintf(stderr, "%10s %8s %10s  %s\n", "total ms", "calls", "us/call", "kernel");
    for (const auto& [name, totals] : rows)
        std::fprintf(stderr, "%10.3f %8llu %10.2f  %.150s\n", double(totals.nanoseconds) / 1e6,
                     static_cast<unsigned long long>(totals.calls), double(totals.nanoseconds) / 1e3 / double(totals.calls),
                     name.c_str());
}

}  // namespace
