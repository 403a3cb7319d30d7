#pragma once
// The inference engine: a model, its tokenizer and a scheduler on a thread of their own.
// submit() and cancel() return at once from any thread; the reply streams back through the
// callback (on the engine's thread) as token ids with UTF-8-safe text deltas, then one final event.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend/device.h"
#include "engine/runtime/image_input.h"
#include "engine/model/model_config.h"
#include "engine/model/weight_formats.h"
#include "engine/backend/sampling.h"

namespace lumen {

class Tokenizer;

using RequestId = uint64_t;

struct GenerationRequest {
    std::vector<int32_t> prompt;  // token ids, special tokens included
    SamplingParams sampling;
    int32_t max_new_tokens = 256;
    std::vector<std::string> stop_strings;  // the reply ends before any of these
    std::vector<int32_t> stop_ids;          // besides the model's eos ids
    bool ignore_eos = false;                // generate max_new_tokens whatever comes (benchmarks)
    // Requests with the same session keep their KV cache between them: a follow-up whose prompt
    // starts with the previous prompt and reply computes only what is new.
    std::optional<uint64_t> session;
    // Images whose embeddings replace runs of placeholder tokens in `prompt`, in prompt order.
    std::vector<PromptImage> images;
    // The submitter's mark, copied into each of the request's events: submitters that share an
    // engine (the chat window and the API server) tell theirs apart by it.
    uint64_t tag = 0;
    // From 0 to kMaxTopLogprobs: each new token comes with its log-probability and that many of
    // the most likely tokens' (GenerationEvent::logprobs); -1: none.
    int32_t logprobs = -1;
};

// A new token's log-probability and the most likely tokens' at its step (see log_softmax_top).
struct TokenLogprobs {
    TokenLogprob chosen;
    std::vector<TokenLogprob> top;  // the most likely first (ties: the lower id)
};
inline constexpr int32_t kMaxTopLogprobs = 20;

struct Timings {
    int32_t prompt_tokens = 0;
    int32_t reused_tokens = 0;  // prompt tokens whose KV came from the cache
    double queue_ms = 0;        // submit to admission
    double prefill_ms = 0;      // admission to the first new token
    double first_token_ms = 0;  // submit to the first new token
    int32_t generated_tokens = 0;
    double decode_ms = 0;       // first to last new token
    double decode_tokens_per_second = 0;
};

enum class FinishReason { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);

struct GenerationEvent {
    RequestId request = 0;
    std::vector<int32_t> ids;  // new token ids (the stop token included when it ended the reply)
    std::string text;          // new text, whole characters only
    std::vector<TokenLogprobs> logprobs;  // for each id of `ids` but a stop token, when the request asked
    FinishReason finish = FinishReason::None;  // set on the final event
    std::string error;         // for FinishReason::Error
    Timings timings;           // complete on the final event
    uint64_t tag = 0;          // the request's GenerationRequest::tag
};

// What the engine's batch holds, as of its last step (for servers' metrics).
struct EngineStats {
    int64_t steps = 0;                 // forward steps so far
    int64_t step_sequences = 0;        // sequences summed over those steps (their mean is the batch size)
    int32_t last_batch = 0;            // sequences in the last step
    int32_t kv_blocks_used = 0;        // held by sequences (cached prefixes that may be evicted not counted)
    int32_t kv_blocks = 0;
};

struct EngineOptions {
    std::string device = "cpu";  // "cpu", "cuda" or "auto"
    // Activations and KV cache on a GPU: "auto" (the weights' type), "float32", "bfloat16" or
    // "float16". The CPU always computes in float32.
    std::string dtype = "auto";
    // The linear weights: as stored, or a 16-bit folder quantized at load to 8 or 4 bits.
    WeightChoice weights;
    // The KV cache: 0 holds keys and values in the compute type; 8 or 4 in 8- or 4-bit codes with a
    // scale and zero per token and head (LMDeploy's quant_policy).
    int32_t quant_policy = 0;
    int64_t session_len = 0;     // context per sequence; 0: the model's max_position_embeddings
    // KV cache size: a value below 1 is a share of the memory available after the weights (as
    // LMDeploy's cache_max_entry_count); 1 or more is a number of blocks.
    double cache_max_entry_count = 0.8;
    int32_t max_batch = 64;           // sequences decoded together
    int32_t prefill_chunk = 512;      // prompt tokens per step (chunked prefill)
    int32_t block_size = 64;
    // Builds the vision encoder of a vision-language model; without one such a model reads text only.
    ImageEncoderFactory image_encoder;
    // Makes the backend instead of `device` choosing one (tests wrap a backend to inject faults);
    // it sets `description` to what it made, in words.
    std::function<std::unique_ptr<Backend>(std::string* description)> backend;
};

class Engine {
public:
    using Callback = std::function<void(const GenerationEvent&)>;

    // Loads the model folder and starts the engine thread. Throws lumen::Error with a readable
    // message (unsupported model, not enough memory, no such device). When the device fails for
    // good (Error::Scope::Device), the requests in flight end with that error and every later one
    // is refused with it until a new engine is made. Destroying the engine ends every request not
    // yet finished with a cancelled event.
    static std::unique_ptr<Engine> create(const std::filesystem::path& model_dir, const EngineOptions& options,
                                          Callback callback);
    virtual ~Engine() = default;

    virtual RequestId submit(GenerationRequest request) = 0;
    virtual void cancel(RequestId id) = 0;
    virtual void close_session(uint64_t session) = 0;
    // Encodes an image before the request that will need it (while its question is written), so
    // that the request finds the embeddings ready; a few recent ones are kept. Errors are left for
    // the request to meet. Without an image encoder it does nothing.
    virtual void encode_ahead(std::shared_ptr<const ImagePixels> pixels, uint64_t content_hash) = 0;

    virtual const Tokenizer& tokenizer() const = 0;
    virtual const ModelConfig& model_config() const = 0;
    // How the weights are held, in users' words ("AWQ 4-bit, groups of 128", "8-bit at load").
    virtual std::string weights() const = 0;
    // How the KV cache holds keys and values and how many tokens it has room for ("8-bit, 65536 tokens").
    virtual std::string kv_cache() const = 0;
    virtual std::string device_name() const = 0;
    // The device the model runs on, with its memory now; safe to ask from any thread.
    virtual DeviceInfo device() const = 0;
    virtual int64_t session_len() const = 0;
    // The vision encoder, when the model has one and the engine was given a factory.
    virtual const ImageEncoder* image_encoder() const = 0;
    virtual int32_t kv_blocks() const = 0;
    // Sequences preempted (blocks freed, recomputed later) since the engine started.
    virtual int32_t preemptions() const = 0;
    // Safe from any thread.
    virtual EngineStats stats() const = 0;
};

}  // namespace lumen
