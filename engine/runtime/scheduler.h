#pragma once
// Persistent batching over the paged KV cache, single-threaded (the engine thread runs it). Every
// step admits waiting sequences while blocks allow, feeds each running sequence either a chunk of
// its prompt or its last sampled token, runs one forward for all of them, samples, and retires
// finished sequences at once. When blocks run out it preempts the newest sequence (frees its
// blocks; it is recomputed later) rather than fail. The blocks themselves (sessions, shared
// prefixes) are the SequenceManager's; image embeddings are the EmbeddingCache's.
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/model/model.h"
#include "engine/runtime/block_manager.h"
#include "engine/runtime/embedding_cache.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/sequence_manager.h"

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
    void close_session(uint64_t session) { sequences_.close_session(session); }
    // Encodes an image before any request needs it and keeps its embeddings with the recent ones.
    void encode_ahead(const PromptImage& image) { embeddings_.encode_ahead(image); }
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
    const BlockManager& blocks() const { return sequences_.blocks(); }
    const SequenceManager& sequences() const { return sequences_; }

private:
    struct Sequence;
    struct Batch;

    // The steps of step(), in order.
    void end_cancelled(std::vector<GenerationEvent>& events);
    void admit(std::vector<GenerationEvent>& events);
    Batch build_batch(std::vector<GenerationEvent>& events);
    Tensor forward(Batch& batch);
    // One token for each logits row, with its log-probabilities where the request asked.
    struct Sampled {
        std::vector<int32_t> ids;
        std::vector<std::optional<TokenLogprobs>> logprobs;
    };
    Sampled sample(const Batch& batch, const Tensor& logits);
    void take_tokens(const Batch& batch, const Sampled& sampled, std::vector<GenerationEvent>& events);
    void retire_finished();

    // Parts of build_batch for running_[i] and its next `n` tokens.
    bool reserve_blocks(std::size_t i, std::size_t n, bool batch_empty, std::vector<GenerationEvent>& events);
    bool add_images(Sequence& s, std::size_t n, BatchLayout& layout, std::vector<GenerationEvent>& events);
    void add_tokens(Sequence& s, std::size_t n, Batch& batch);
    void requeue_preempted();

    void preempt(Sequence& s);
    void deliver(Sequence& s, int32_t token, const std::optional<TokenLogprobs>& logprobs, std::vector<GenerationEvent>& events);
    void finish(Sequence& s, FinishReason reason, std::vector<GenerationEvent>& events, const std::string& error = {});

    Model& model_;
    const Tokenizer* tokenizer_;
    EngineOptions options_;
    int64_t session_len_;
    std::unordered_set<int32_t> eos_ids_;
    ImageEncoder* encoder_;
    SequenceManager sequences_;
    EmbeddingCache embeddings_;
    std::deque<std::unique_ptr<Sequence>> waiting_;
    std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
    int32_t preemptions_ = 0;
    StepStats last_step_;
};

}  // namespace lumen
