#include "engine/runtime/scheduler.h"

#include <algorithm>
#include <optional>

#include "engine/runtime/sampler.h"
#include "engine/runtime/stop_strings.h"
#include "engine/text/detokenizer.h"
#include "engine/text/tokenizer.h"
#include "engine/util/error.h"

namespace lumen {

struct Scheduler::Sequence : KvSequence {
    Sequence(RequestId id_, GenerationRequest req, const Tokenizer* tok)
        : KvSequence(std::move(req)), id(id_), prompt_len(tokens.size()), sampler(request.sampling), reply(request.stop_strings) {
        if (tok) detok.emplace(*tok);
    }

    RequestId id;
    std::size_t prompt_len;
    Sampler sampler;
    std::optional<Detokenizer> detok;
    StopStrings reply;            // its decoded text, held back and cut at stop strings
    bool cancelled = false;
    bool preempted = false;       // lost its blocks this step; goes back to the queue
    bool done = false;
    Timings timings;
    Clock::time_point submitted, admitted, first_token, last_token;
};

// One forward's worth: what each sequence feeds and where its logits are.
struct Scheduler::Batch {
    struct Part {
        Sequence* seq;
        std::size_t count;  // tokens fed
        int32_t logit_row;  // -1 while a prompt is only partly fed
    };
    BatchLayout layout;
    std::vector<Part> parts;
};

namespace {

// Why a request's images cannot be used, or empty.
std::string check_images(const GenerationRequest& r, std::size_t prompt_len, const ImageEncoder* encoder) {
    if (r.images.empty()) return {};
    if (!encoder) return "this model reads text only; it cannot take images";
    int64_t end = 0;
    for (std::size_t i = 0; i < r.images.size(); ++i) {
        const PromptImage& im = r.images[i];
        const std::string which = "image " + std::to_string(i + 1);
        if (!im.pixels || im.pixels->values.empty()) return which + " has no pixels";
        const ImagePixels& p = *im.pixels;
        if (int64_t(p.values.size()) != int64_t(p.tiles) * p.channels * p.height * p.width)
            return which + "'s pixels do not match their shape";
        if (im.first < end || im.count <= 0 || int64_t(im.first) + im.count > int64_t(prompt_len))
            return which + "'s placeholder tokens are outside the prompt or overlap another image";
        if (encoder->tokens_for(p) != im.count)
            return which + " has " + std::to_string(im.count) + " placeholder tokens but becomes " +
                   std::to_string(encoder->tokens_for(p)) + " embeddings";
        end = int64_t(im.first) + im.count;
    }
    return {};
}

}  // namespace

Scheduler::Scheduler(Model& model, const Tokenizer* tokenizer, const EngineOptions& options, int32_t num_blocks,
                     int64_t session_len, ImageEncoder* encoder)
    : model_(model), tokenizer_(tokenizer), options_(options), session_len_(session_len), encoder_(encoder),
      sequences_(model.backend(), num_blocks, options.block_size), embeddings_(model.backend(), encoder) {
    for (int64_t id : model.text().eos_token_ids) eos_ids_.insert(int32_t(id));
}

Scheduler::~Scheduler() = default;

void Scheduler::add(RequestId id, GenerationRequest request, Clock::time_point submitted, std::vector<GenerationEvent>& events) {
    auto s = std::make_unique<Sequence>(id, std::move(request), tokenizer_);
    s->submitted = submitted;
    s->timings.prompt_tokens = int32_t(s->prompt_len);
    std::string problem;
    const int64_t vocab = model_.text().vocab_size;
    if (s->tokens.empty()) problem = "the prompt is empty";
    else if (int64_t(s->prompt_len) >= session_len_)
        problem = "the prompt has " + std::to_string(s->prompt_len) + " tokens but the context holds " +
                  std::to_string(session_len_) + " (session_len); shorten the prompt or raise session_len";
    else if (s->request.max_new_tokens <= 0) problem = "max_new_tokens must be at least 1";
    else if (s->request.session && sequences_.busy(*s->request.session)) problem = "the session is already generating";
    else if (std::string why = check_images(s->request, s->prompt_len, encoder_); !why.empty()) problem = why;
    else
        for (int32_t t : s->tokens)
            if (t < 0 || t >= vocab) {
                problem = "token id " + std::to_string(t) + " is outside the vocabulary (" + std::to_string(vocab) + ")";
                break;
            }
    if (!problem.empty()) {
        GenerationEvent e;
        e.request = id;
        e.finish = FinishReason::Error;
        e.error = problem;
        e.timings = s->timings;
        events.push_back(std::move(e));
        return;
    }
    sequences_.begin(*s);
    waiting_.push_back(std::move(s));
}

void Scheduler::cancel(RequestId id) {
    for (auto& s : waiting_)
        if (s->id == id) s->cancelled = true;
    for (auto& s : running_)
        if (s->id == id) s->cancelled = true;
}

void Scheduler::preempt(Sequence& s) {
    sequences_.release(s);
    s.preempted = true;
    ++preemptions_;
}

void Scheduler::deliver(Sequence& s, int32_t token, const std::optional<TokenLogprobs>& logprobs,
                        std::vector<GenerationEvent>& events) {
    const auto now = Clock::now();
    s.tokens.push_back(token);
    if (s.timings.generated_tokens++ == 0) {
        s.first_token = now;
        s.timings.prefill_ms = std::chrono::duration<double, std::milli>(now - s.admitted).count();
        s.timings.first_token_ms = std::chrono::duration<double, std::milli>(now - s.submitted).count();
    }
    s.last_token = now;

    GenerationEvent e;
    e.request = s.id;
    e.ids = {token};
    const bool stop_token = (!s.request.ignore_eos && eos_ids_.count(token)) ||
                            std::find(s.request.stop_ids.begin(), s.request.stop_ids.end(), token) != s.request.stop_ids.end();
    FinishReason reason = FinishReason::None;
    if (stop_token) {
        reason = FinishReason::Stop;
    } else {
        if (logprobs) e.logprobs.push_back(*logprobs);
        e.text = s.reply.push(s.detok ? s.detok->push(token) : std::string());
        if (s.reply.stopped()) reason = FinishReason::Stop;
    }
    if (reason == FinishReason::None &&
        (s.timings.generated_tokens >= s.request.max_new_tokens || int64_t(s.tokens.size()) >= session_len_))
        reason = FinishReason::Length;
    events.push_back(std::move(e));
    if (reason != FinishReason::None) finish(s, reason, events);
}

void Scheduler::finish(Sequence& s, FinishReason reason, std::vector<GenerationEvent>& events, const std::string& error) {
    GenerationEvent e;
    e.request = s.id;
    e.finish = reason;
    e.error = error;
    // Whatever the detokenizer and the stop-string check still held back is final now.
    if (reason != FinishReason::Error && !(reason == FinishReason::Stop && s.reply.holding_back()))
        e.text = s.reply.flush(s.detok ? s.detok->finish() : std::string());
    if (s.timings.generated_tokens > 1) {
        s.timings.decode_ms = std::chrono::duration<double, std::milli>(s.last_token - s.first_token).count();
        if (s.timings.decode_ms > 0)
            s.timings.decode_tokens_per_second = (s.timings.generated_tokens - 1) * 1000.0 / s.timings.decode_ms;
    }
    s.timings.reused_tokens = s.reused_tokens;
    e.timings = s.timings;
    events.push_back(std::move(e));

    sequences_.retire(s, reason != FinishReason::Error);
    s.done = true;
}

void Scheduler::step(std::vector<GenerationEvent>& events) {
    embeddings_.next_step();
    end_cancelled(events);
    admit(events);
    Batch batch = build_batch(events);
    if (!batch.parts.empty()) {
        const Tensor logits = forward(batch);
        take_tokens(batch, sample(batch, logits), events);
    }
    retire_finished();
}

void Scheduler::end_cancelled(std::vector<GenerationEvent>& events) {
    // Cancelled requests that never started end here.
    for (auto it = waiting_.begin(); it != waiting_.end();) {
        if ((*it)->cancelled) {
            (*it)->done = true;
            finish(**it, FinishReason::Cancelled, events);
            it = waiting_.erase(it);
        } else {
            ++it;
        }
    }
    for (auto& s : running_)
        if (s->cancelled && !s->done) finish(*s, FinishReason::Cancelled, events);
}

void Scheduler::admit(std::vector<GenerationEvent>& events) {
    while (!waiting_.empty() && running_.size() < std::size_t(options_.max_batch)) {
        Sequence& s = *waiting_.front();
        if (!sequences_.admit(s)) {
            // Not now, unless nothing runs that could free blocks: then never.
            if (!running_.empty()) break;
            finish(s, FinishReason::Error, events,
                   "the sequence needs " + std::to_string(sequences_.blocks_for(s.tokens.size() + 1)) +
                       " KV blocks but the cache has " + std::to_string(sequences_.blocks().num_blocks()) +
                       "; raise cache_max_entry_count or lower session_len");
            waiting_.pop_front();
            continue;
        }
        s.admitted = Clock::now();
        if (s.timings.queue_ms == 0)
            s.timings.queue_ms = std::chrono::duration<double, std::milli>(s.admitted - s.submitted).count();
        running_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
    }
}

Scheduler::Batch Scheduler::build_batch(std::vector<GenerationEvent>& events) {
    // A prompt chunk or the last sampled token of each running sequence.
    Batch batch;
    last_step_ = StepStats{};
    int64_t budget = std::max(1, options_.prefill_chunk);
    for (std::size_t i = 0; i < running_.size(); ++i) {
        Sequence& s = *running_[i];
        if (s.done || s.preempted) continue;
        const std::size_t remaining = s.tokens.size() - s.computed;
        std::size_t n = remaining;
        if (remaining > 1) {
            if (budget <= 0) continue;
            n = std::min<std::size_t>(remaining, std::size_t(budget));
            budget -= int64_t(n);
        }
        if (!reserve_blocks(i, n, batch.parts.empty(), events)) continue;
        if (!add_images(s, n, batch.layout, events)) continue;
        add_tokens(s, n, batch);
        ++last_step_.sequences;
        if (remaining > 1) last_step_.prompt_tokens += int32_t(n);
        last_step_.context_tokens += int64_t(s.computed + n);
    }
    requeue_preempted();
    return batch;
}

bool Scheduler::reserve_blocks(std::size_t i, std::size_t n, bool batch_empty, std::vector<GenerationEvent>& events) {
    Sequence& s = *running_[i];
    while (!sequences_.ensure_blocks(s, s.computed + n)) {
        // Preempt the newest sequence not yet in this batch; if that is this one, it waits.
        Sequence* victim = nullptr;
        for (std::size_t j = running_.size(); j-- > i + 1;)
            if (!running_[j]->done && !running_[j]->preempted && !running_[j]->blocks.empty()) {
                victim = running_[j].get();
                break;
            }
        if (!victim) break;
        preempt(*victim);
    }
    const std::size_t bs = std::size_t(sequences_.block_size());
    if (s.blocks.size() * bs >= s.computed + n) return true;
    if (batch_empty && i + 1 == running_.size()) {
        finish(s, FinishReason::Error, events,
               "the KV cache (" + std::to_string(sequences_.blocks().num_blocks()) + " blocks of " + std::to_string(bs) +
                   " tokens) cannot hold this sequence; raise cache_max_entry_count");
    } else {
        preempt(s);
    }
    return false;
}

bool Scheduler::add_images(Sequence& s, std::size_t n, BatchLayout& layout, std::vector<GenerationEvent>& events) {
    // Image rows of this chunk: encoded now if no cache holds them.
    const int32_t base = int32_t(layout.token_ids.size());
    for (const PromptImage& im : s.request.images) {
        const std::size_t from = std::max(s.computed, std::size_t(im.first));
        const std::size_t to = std::min(s.computed + n, std::size_t(im.first + im.count));
        if (from >= to) continue;
        try {
            const Tensor& rows = embeddings_.embeddings_of(im);
            layout.inserts.push_back({rows.rows_view(int64_t(from) - im.first, int64_t(to - from)),
                                      base + int32_t(from - s.computed)});
        } catch (const std::exception& e) {
            finish(s, FinishReason::Error, events, std::string("the image could not be encoded: ") + user_message(e, "encode the image"));
            while (!layout.inserts.empty() && layout.inserts.back().first >= base) layout.inserts.pop_back();
            return false;
        }
    }
    return true;
}

void Scheduler::add_tokens(Sequence& s, std::size_t n, Batch& batch) {
    BatchLayout& layout = batch.layout;
    const int32_t seq_index = int32_t(batch.parts.size());
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t pos = s.computed + k;
        layout.token_ids.push_back(s.tokens[pos]);
        layout.positions.push_back(int32_t(pos));
        layout.token_seq.push_back(seq_index);
        // transformers runs the whole prompt in one forward, so dynamic RoPE sees its full length.
        layout.rope_lengths.push_back(int32_t(pos < s.prompt_len ? std::max(s.prompt_len, pos + 1) : pos + 1));
    }
    int32_t row = -1;
    if (s.computed + n == s.tokens.size()) {
        row = int32_t(layout.logit_rows.size());
        layout.logit_rows.push_back(int32_t(layout.token_ids.size() - 1));
    }
    batch.parts.push_back({&s, n, row});
}

void Scheduler::requeue_preempted() {
    // Preempted sequences go back to the front of the queue, oldest first.
    for (auto it = running_.rbegin(); it != running_.rend(); ++it)
        if (!(*it)->done && (*it)->preempted) {
            (*it)->preempted = false;
            waiting_.push_front(std::move(*it));
        }
    running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
}

Tensor Scheduler::forward(Batch& batch) {
    BatchLayout& layout = batch.layout;
    for (const auto& p : batch.parts) layout.max_blocks = std::max(layout.max_blocks, int32_t(p.seq->blocks.size()));
    layout.block_tables.assign(batch.parts.size() * std::size_t(layout.max_blocks), 0);
    for (std::size_t i = 0; i < batch.parts.size(); ++i)
        std::copy(batch.parts[i].seq->blocks.begin(), batch.parts[i].seq->blocks.end(),
                  layout.block_tables.begin() + std::ptrdiff_t(i * std::size_t(layout.max_blocks)));
    return model_.forward(layout);
}

Scheduler::Sampled Scheduler::sample(const Batch& batch, const Tensor& logits) {
    Sampled out;
    std::vector<int32_t>& chosen = out.ids;
    chosen.resize(batch.layout.logit_rows.size());
    out.logprobs.resize(chosen.size());
    if (logits.empty()) return out;
    // Rows whose request wants log-probabilities come to the host as the model gave them, before
    // sampling changes them; the chosen token's is read once it is known.
    std::vector<std::pair<int32_t, std::vector<float>>> raw;  // (logit row, log-probabilities)
    for (const auto& p : batch.parts) {
        if (p.logit_row < 0 || p.seq->request.logprobs < 0) continue;
        std::vector<float> row(static_cast<std::size_t>(logits.cols));
        model_.backend().read(logits.rows_view(p.logit_row, 1), row);
        TokenLogprobs& lp = out.logprobs[std::size_t(p.logit_row)].emplace();
        lp.top = log_softmax_top(row, std::min(p.seq->request.logprobs, kMaxTopLogprobs));
        raw.emplace_back(p.logit_row, std::move(row));
    }
    auto read_chosen = [&] {
        for (const auto& [row, values] : raw) {
            const int32_t id = chosen[std::size_t(row)];
            out.logprobs[std::size_t(row)]->chosen = {id, id >= 0 && std::size_t(id) < values.size() ? values[std::size_t(id)] : 0.0f};
        }
    };
    // Plain greedy rows are decided where the logits are; only rows that need the sampler's
    // processors come to the host.
    const bool all_argmax = std::all_of(batch.parts.begin(), batch.parts.end(),
                                        [](const Batch::Part& p) { return p.logit_row < 0 || p.seq->sampler.argmax_only(); });
    if (all_argmax) {
        model_.backend().argmax_rows(logits, chosen);
        read_chosen();
        return out;
    }
    // Sampled where the logits are; each sequence draws from its own stream.
    std::vector<Backend::SampleRow> rows(batch.layout.logit_rows.size());
    for (const auto& p : batch.parts) {
        if (p.logit_row < 0) continue;
        Backend::SampleRow& r = rows[std::size_t(p.logit_row)];
        r.params = p.seq->sampler.params();
        if (r.params.repetition_penalty != 1.0f) r.penalized = distinct_tokens(p.seq->tokens);
        r.lowered = lowered_logits(std::span(p.seq->tokens).subspan(p.seq->prompt_len), r.params);
        r.u = p.seq->sampler.draw();
    }
    model_.backend().sample_rows(logits, rows, chosen);
    read_chosen();
    return out;
}

void Scheduler::take_tokens(const Batch& batch, const Sampled& sampled, std::vector<GenerationEvent>& events) {
    for (const auto& p : batch.parts) {
        Sequence& s = *p.seq;
        s.computed += p.count;
        sequences_.register_full_blocks(s);
        if (p.logit_row >= 0)
            deliver(s, sampled.ids[std::size_t(p.logit_row)], sampled.logprobs[std::size_t(p.logit_row)], events);
    }
}

void Scheduler::retire_finished() {
    running_.erase(std::remove_if(running_.begin(), running_.end(), [](const auto& s) { return s->done; }), running_.end());
}

void Scheduler::end_all(FinishReason reason, const std::string& error, std::vector<GenerationEvent>& events) {
    for (auto& s : running_)
        if (!s->done) finish(*s, reason, events, error);
    for (auto& s : waiting_) finish(*s, reason, events, error);
    running_.clear();
    waiting_.clear();
}

}  // namespace lumen
