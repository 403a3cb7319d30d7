#include "tests/support/engine_runner.h"

#include <stdexcept>

#include "engine/model/model.h"
#include "tests/support/test_support.h"

namespace lumen::test {

std::vector<float> prompt_logits(const std::filesystem::path& dir, const std::vector<int32_t>& prompt, const WeightChoice& choice,
                                 int32_t kv_bits) {
    auto backend = make_cpu_backend();
    Model model(dir, *backend, std::nullopt, choice);
    const auto& t = model.text();
    const BatchLayout batch = prompt_batch(prompt);
    backend->allocate_kv_cache({int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), 64, batch.max_blocks, DType::F32,
                               kv_bits});
    const Tensor logits = model.forward(batch);
    std::vector<float> out(std::size_t(t.vocab_size));
    backend->read(logits, out);
    return out;
}

EngineRunner::EngineRunner(const std::filesystem::path& model, EngineOptions options, const std::string& device) {
    options.device = device;
    engine_ = Engine::create(model, options, [this](const GenerationEvent& e) {
        if (on_event) on_event(e);
        std::lock_guard lock(mutex_);
        Collected& c = results_[e.request];
        c.ids.insert(c.ids.end(), e.ids.begin(), e.ids.end());
        c.logprobs.insert(c.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
        if (!e.text.empty()) c.deltas.push_back(e.text);
        c.text += e.text;
        if (e.finish != FinishReason::None) {
            c.final_event = e;
            c.done = true;
            cv_.notify_all();
        }
    });
}

Collected EngineRunner::wait(RequestId id) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::seconds(120), [&] { return results_[id].done; }))
        throw std::runtime_error("request did not finish within 120 s");
    return results_[id];
}

GenerationRequest greedy(std::vector<int32_t> prompt, int32_t max_new_tokens) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.sampling.temperature = 0;
    r.max_new_tokens = max_new_tokens;
    return r;
}

}  // namespace lumen::test
