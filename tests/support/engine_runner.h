#pragma once
// Runs requests on an Engine and collects what streamed back, for tests.
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/runtime/engine.h"

namespace lumen::test {

// The CPU backend's logits after one prefill of `prompt` (the model's weights as `choice` asks, a
// KV cache of `kv_bits`; 0: fp32).
std::vector<float> prompt_logits(const std::filesystem::path& dir, const std::vector<int32_t>& prompt, const WeightChoice& choice = {},
                                 int32_t kv_bits = 0);

struct Collected {
    std::vector<int32_t> ids;
    std::vector<TokenLogprobs> logprobs;
    std::vector<std::string> deltas;
    std::string text;
    GenerationEvent final_event;
    bool done = false;
};

class EngineRunner {
public:
    EngineRunner(const std::filesystem::path& model, EngineOptions options = {}, const std::string& device = "cpu");

    Engine& engine() { return *engine_; }
    RequestId submit(GenerationRequest r) { return engine_->submit(std::move(r)); }
    // Waits for the request to finish (fails the test run after 120 s).
    Collected wait(RequestId id);
    // Submits and waits.
    Collected run(GenerationRequest r) { return wait(submit(std::move(r))); }
    // Destroys the engine (what it still had gets its final events); wait() then reads what was collected.
    void shut_down() { engine_.reset(); }
    // Called on the engine thread for every event, before it is collected.
    std::function<void(const GenerationEvent&)> on_event;

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<RequestId, Collected> results_;
    std::unique_ptr<Engine> engine_;
};

GenerationRequest greedy(std::vector<int32_t> prompt, int32_t max_new_tokens);

}  // namespace lumen::test
