#include "engine/runtime/engine.h"

#include <cmath>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "engine/backend/backend_factory.h"
#include "engine/util/error.h"
#include "engine/model/model.h"
#include "engine/runtime/scheduler.h"
#include "engine/text/tokenizer.h"

namespace lumen {

const char* finish_reason_name(FinishReason r) {
    switch (r) {
    case FinishReason::None: return "none";
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
    }
    return "?";
}

namespace {

class EngineImpl final : public Engine {
public:
    EngineImpl(const std::filesystem::path& dir, const EngineOptions& options, Callback callback)
        : options_(options), callback_(std::move(callback)) {
        backend_ = options.backend ? options.backend(&device_) : make_backend(options.device, &device_);
        tokenizer_ = Tokenizer::load(dir);
        std::optional<DType> compute;
        if (options.dtype == "float32") compute = DType::F32;
        else if (options.dtype == "bfloat16") compute = DType::BF16;
        else if (options.dtype == "float16") compute = DType::F16;
        else if (options.dtype != "auto")
            throw Error("unknown dtype '" + options.dtype + "' (choose auto, float32, bfloat16 or float16)");
        model_ = std::make_unique<Model>(dir, *backend_, compute, options.weights);
        // Before the KV cache is sized, so that the encoder's weights and scratch are not counted free.
        if (options.image_encoder && model_->config().is_vision_language())
            encoder_ = options.image_encoder(dir, model_->config(), *backend_);

        const TextConfig& t = model_->text();
        // Dynamic NTK scaling is how these models reach past their trained context.
        const int64_t trained = t.max_position_embeddings;
        session_len_ = options.session_len > 0 ? options.session_len
                       : t.rope_scaling.type == RopeScaling::Type::Dynamic ? int64_t(double(trained) * t.rope_scaling.factor)
                                                                           : trained;
        const int64_t bs = options.block_size;
        if (options.quant_policy != 0 && options.quant_policy != 4 && options.quant_policy != 8)
            throw Error("quant_policy must be 0 (a 16-bit KV cache), 8 or 4 (got " + std::to_string(options.quant_policy) + ")");
        KvCacheShape shape{int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), int32_t(bs), 0,
                           backend_->compute_dtype(), options.quant_policy};
        const auto block_bytes = uint64_t(shape.block_bytes());
        int64_t blocks;
        if (options.cache_max_entry_count >= 1) {
            // A number of blocks; what memory can hold is checked when the cache is made.
            if (!(options.cache_max_entry_count <= double(int64_t(1) << 31)) ||
                options.cache_max_entry_count != std::floor(options.cache_max_entry_count))
                throw Error("cache_max_entry_count must be a share of free memory below 1 or a whole number of blocks up to 2^31 "
                            "(got " + std::to_string(options.cache_max_entry_count) + ")");
            blocks = int64_t(options.cache_max_entry_count);
        } else {
            if (!(options.cache_max_entry_count > 0)) throw Error("cache_max_entry_count must be positive");
            const uint64_t budget = uint64_t(options.cache_max_entry_count * double(backend_->free_memory()));
            blocks = int64_t(budget / block_bytes);
            // No more than max_batch full-length sequences can use.
            blocks = std::min<int64_t>(blocks, int64_t(options.max_batch) * ((session_len_ + bs - 1) / bs + 1));
        }
        if (blocks < 1)
            throw Error("no memory is left for the KV cache (" + std::to_string(block_bytes >> 10) +
                        " KiB per block of " + std::to_string(bs) + " tokens)");
        shape.num_blocks = int32_t(blocks);
        backend_->allocate_kv_cache(shape);
        scheduler_ = std::make_unique<Scheduler>(*model_, tokenizer_.get(), options, int32_t(blocks), session_len_, encoder_.get());
        thread_ = std::thread([this] { run(); });
    }

    ~EngineImpl() override {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }

    RequestId submit(GenerationRequest request) override {
        std::lock_guard lock(mutex_);
        const RequestId id = next_id_++;
        incoming_.push_back({id, std::move(request), Scheduler::Clock::now()});
        wake_.notify_all();
        return id;
    }

    void cancel(RequestId id) override {
        std::lock_guard lock(mutex_);
        cancels_.push_back(id);
        wake_.notify_all();
    }

    void close_session(uint64_t session) override {
        std::lock_guard lock(mutex_);
        closed_sessions_.push_back(session);
        wake_.notify_all();
    }

    void encode_ahead(std::shared_ptr<const ImagePixels> pixels, uint64_t content_hash) override {
        if (!encoder_ || !pixels) return;
        std::lock_guard lock(mutex_);
        ahead_.push_back({std::move(pixels), content_hash, 0, 0});
        wake_.notify_all();
    }

    const Tokenizer& tokenizer() const override { return *tokenizer_; }
    const ModelConfig& model_config() const override { return model_->config(); }
    std::string weights() const override { return model_->weights_description(); }
    std::string kv_cache() const override {
        const KvCacheShape& kv = backend_->kv_cache_shape();
        return std::to_string(kv.bits ? kv.bits : int(dtype_size(kv.dtype) * 8)) + "-bit, " +
               std::to_string(int64_t(kv.num_blocks) * kv.block_size) + " tokens";
    }
    std::string device_name() const override { return device_; }
    DeviceInfo device() const override { return backend_->device(); }
    int64_t session_len() const override { return session_len_; }
    int32_t kv_blocks() const override { return backend_->kv_cache_shape().num_blocks; }
    int32_t preemptions() const override { return preemptions_.load(); }
    EngineStats stats() const override {
        std::lock_guard lock(stats_mutex_);
        return stats_;
    }
    const ImageEncoder* image_encoder() const override { return encoder_.get(); }

private:
    struct Incoming {
        RequestId id;
        GenerationRequest request;
        Scheduler::Clock::time_point submitted;
    };

    void run() {
        std::vector<GenerationEvent> events;
        for (;;) {
            std::vector<Incoming> incoming;
            std::vector<RequestId> cancels;
            std::vector<uint64_t> closed;
            std::vector<PromptImage> ahead;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [&] {
                    return stop_ || !incoming_.empty() || !cancels_.empty() || !closed_sessions_.empty() || !ahead_.empty() ||
                           scheduler_->has_work();
                });
                incoming.swap(incoming_);
                for (const auto& r : incoming)
                    if (r.request.tag) tags_[r.id] = r.request.tag;
                if (stop_) {
                    lock.unlock();
                    shut_down(incoming, events);
                    return;
                }
                cancels.swap(cancels_);
                closed.swap(closed_sessions_);
                ahead.swap(ahead_);
            }
            if (!device_lost_.empty()) {
                // Nothing runs on a lost device: every request is answered with why.
                for (auto& r : incoming) events.push_back(final_event(r.id, FinishReason::Error, device_lost_));
                incoming.clear(), ahead.clear();
            }
            for (auto& r : incoming) scheduler_->add(r.id, std::move(r.request), r.submitted, events);
            for (RequestId id : cancels) scheduler_->cancel(id);
            for (uint64_t s : closed) scheduler_->close_session(s);
            for (const PromptImage& image : ahead) {
                try {
                    scheduler_->encode_ahead(image);
                } catch (const std::exception& e) {
                    // The request with this image meets the same error and reports it, unless the
                    // device is gone.
                    note_device_fault(e);
                }
            }
            bool stepped = false;
            if (scheduler_->has_work()) {
                try {
                    stepped = true;
                    scheduler_->step(events);
                } catch (const std::exception& e) {
                    note_device_fault(e);
                    scheduler_->end_all(FinishReason::Error, device_lost_.empty() ? user_message(e, "generate the reply") : device_lost_, events);
                }
            }
            preemptions_ = scheduler_->preemptions();
            {
                std::lock_guard lock(stats_mutex_);
                const auto& step = scheduler_->last_step();
                if (stepped && step.sequences > 0) ++stats_.steps, stats_.step_sequences += step.sequences;
                stats_.last_batch = stepped ? step.sequences : 0;
                stats_.kv_blocks = scheduler_->blocks().num_blocks();
                stats_.kv_blocks_used = stats_.kv_blocks - scheduler_->blocks().available();
            }
            dispatch(events);
        }
    }

    // A device error leaves the device unusable: remembered, so that later requests are refused.
    void note_device_fault(const std::exception& e) {
        const auto* error = dynamic_cast<const Error*>(&e);
        if ((error && error->device_lost()) || backend_->device_lost()) device_lost_ = e.what();
    }

    static GenerationEvent final_event(RequestId id, FinishReason reason, const std::string& error) {
        GenerationEvent e;
        e.request = id;
        e.finish = reason;
        e.error = error;
        return e;
    }

    // Every request not finished gets its final event (the last thing the engine thread does).
    void shut_down(const std::vector<Incoming>& incoming, std::vector<GenerationEvent>& events) {
        const std::string why = "the engine was shut down before the reply finished";
        for (const auto& r : incoming) events.push_back(final_event(r.id, FinishReason::Cancelled, why));
        scheduler_->end_all(FinishReason::Cancelled, why, events);
        dispatch(events);
    }

    // Hands the events to the callback, each with its request's tag.
    void dispatch(std::vector<GenerationEvent>& events) {
        for (auto& e : events) {
            if (const auto it = tags_.find(e.request); it != tags_.end()) {
                e.tag = it->second;
                if (e.finish != FinishReason::None) tags_.erase(it);
            }
            callback_(e);
        }
        events.clear();
    }

    EngineOptions options_;
    Callback callback_;
    std::unordered_map<RequestId, uint64_t> tags_;
    mutable std::mutex stats_mutex_;
    EngineStats stats_;  // of requests with a tag, until their final event (engine thread)
    std::string device_lost_;  // why, once the device has failed for good
    std::string device_;
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<Tokenizer> tokenizer_;
    std::unique_ptr<Model> model_;
    std::unique_ptr<ImageEncoder> encoder_;
    std::unique_ptr<Scheduler> scheduler_;
    int64_t session_len_ = 0;
    std::atomic<int32_t> preemptions_{0};

    std::mutex mutex_;
    std::condition_variable wake_;
    bool stop_ = false;
    RequestId next_id_ = 1;
    std::vector<Incoming> incoming_;
    std::vector<RequestId> cancels_;
    std::vector<uint64_t> closed_sessions_;
    std::vector<PromptImage> ahead_;
    std::thread thread_;
};

}  // namespace

std::unique_ptr<Engine> Engine::create(const std::filesystem::path& model_dir, const EngineOptions& options, Callback callback) {
    return std::make_unique<EngineImpl>(model_dir, options, std::move(callback));
}

}  // namespace lumen
