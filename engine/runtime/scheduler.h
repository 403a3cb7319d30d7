#pragma once
// Persistent batching over the paged KV cache, single-threaded (the engine thread runs it). Every
// step admits waiting sequences while blocks allow, feeds each running sequence either a chunk of
// its prompt or its last sampled token, runs one forward for all of them, samples, and retires
// finished sequences at once. When blocks run out it preempts the newest sequence (frees its
// blocks; it is recomputed later) rather than fail.
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/runtime/block_manager.h"
#include "engine/text/detokenizer.h"
#include "engine/runtime/engine.h"
#include "engine/model/model.h"
#include "engine/runtime/sampler.h"

namespace lumen {

class Scheduler {
public:
    using Clock = std::chrono::steady_clock;

    // Without a tokenizer (benchmarks on random weights) events carry ids but no text.
    // `encoder` (may be null) turns a request's images into embeddings when a chunk needs them.
    Scheduler(Model& model, const Tokenizer* tokenizer, const EngineOptions& options, int32_t num_blocks, int64_t session_len,
              ImageEncoder* encoder = nullptr);
    ~Scheduler();

    void add(RequestId id, GenerationRequest request, Clock::time_point submitted, std::vector<GenerationEvent>& events);
    void cancel(RequestId id);
    void close_session(uint64_t session);
    // Encodes an image before any request needs it and keeps its embeddings with the recent ones.
    void encode_ahead(const PromptImage& image);
    bool has_work() const { return !waiting_.empty() || !running_.empty(); }

    // One forward step; appends the events it produced.
    void step(std::vector<GenerationEvent>& events);
    // Ends every request: with an error after a step failed in a way that is not the request's
    // fault, cancelled when the engine shuts down.
    void end_all(FinishReason reason, const std::string& error, std::vector<GenerationEvent>& events);

    // For tests, diagnostics and benchmarks.
    int32_t preemptions() const { return preemptions_; }
    struct StepStats {
        int32_t sequences = 0;       // in the forward
        int32_t prompt_tokens = 0;   // tokens that were prompt chunks (not decode)
        int64_t context_tokens = 0;  // keys and values read by attention, summed over sequences
    };
    const StepStats& last_step() const { return last_step_; }
    const BlockManager& blocks() const { return blocks_; }

private:
    struct Sequence;
    struct Session {
        std::vector<int32_t> tokens;  // tokens whose KV the blocks hold
        std::vector<int32_t> blocks;
        std::vector<PromptImage> images;  // the images among those tokens
    };
    // An image's embeddings on the backend, kept while images are likely to be asked about again.
    struct Encoded {
        Buffer rows;
        uint64_t last_step = 0;
    };

    void attach_cached_prefix(Sequence& s);
    uint64_t block_hash(const Sequence& s, std::size_t block, uint64_t previous) const;
    // The embeddings of `image`, encoding it if they are not cached; kept until the next step.
    const Tensor& embeddings_of(const PromptImage& image);
    void evict_embeddings();
    bool ensure_blocks(Sequence& s, std::size_t positions);
    // Frees the cache of one idle session other than `keep`'s; false when there is none.
    bool close_idle_session(const Sequence& keep);
    void preempt(Sequence& s);
    void release_blocks(Sequence& s);
    void register_full_blocks(Sequence& s);
    void finish(Sequence& s, FinishReason reason, std::vector<GenerationEvent>& events, const std::string& error = {});
    void deliver(Sequence& s, int32_t token, std::vector<GenerationEvent>& events);

    Model& model_;
    const Tokenizer* tokenizer_;
    EngineOptions options_;
    BlockManager blocks_;
    int64_t session_len_;
    std::unordered_set<int32_t> eos_ids_;
    std::deque<std::unique_ptr<Sequence>> waiting_;
    std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
    std::unordered_map<uint64_t, Session> sessions_;
    std::unordered_set<uint64_t> busy_sessions_;
    ImageEncoder* encoder_;
    std::unordered_map<uint64_t, Encoded> encoded_;
    uint64_t step_count_ = 0;
    int32_t preemptions_ = 0;
    StepStats last_step_;
};

}  // namespace lumen
