#include "engine/runtime/scheduler.h"

#include <algorithm>

#include "engine/util/error.h"
#include "engine/text/tokenizer.h"

namespace lumen {

struct Scheduler::Sequence {
    Sequence(RequestId id_, GenerationRequest req, const Tokenizer* tok)
        : id(id_), request(std::move(req)), tokens(request.prompt), prompt_len(tokens.size()), sampler(request.sampling) {
        if (tok) detok.emplace(*tok);
    }

    RequestId id;
    GenerationRequest request;
    std::vector<int32_t> tokens;  // prompt, then generated tokens
    std::size_t prompt_len;
    std::size_t computed = 0;     // tokens whose keys and values are in the cache
    std::vector<int32_t> blocks;  // block table
    std::vector<uint64_t> hashes; // chain hashes of the full blocks seen so far
    bool attached = false;        // cached prefix looked up
    Sampler sampler;
    std::optional<Detokenizer> detok;
    std::string text;             // decoded reply so far, for stop strings
    std::size_t emitted = 0;      // bytes of `text` already sent
    bool cancelled = false;
    bool preempted = false;       // lost its blocks this step; goes back to the queue
    bool done = false;
    Timings timings;
    Clock::time_point submitted, admitted, first_token, last_token;
};

namespace {

// Whether two images put the same pixels at the same prompt positions.
bool same_image(const PromptImage& a, const PromptImage& b) {
    return a.first == b.first && a.count == b.count && a.content_hash == b.content_hash;
}

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
    : model_(model), tokenizer_(tokenizer), options_(options), blocks_(num_blocks, options.block_size),
      session_len_(session_len), encoder_(encoder) {
    for (int64_t id : model.text().eos_token_ids) eos_ids_.insert(int32_t(id));
}

Scheduler::~Scheduler() = default;

uint64_t Scheduler::block_hash(const Sequence& s, std::size_t block, uint64_t previous) const {
    const std::size_t bs = std::size_t(blocks_.block_size());
    const std::size_t begin = block * bs, end = begin + bs;
    // Placeholder tokens look alike whatever the image: the images under the block go into its hash.
    uint64_t salt = 0;
    for (const PromptImage& im : s.request.images)
        if (std::size_t(im.first) < end && std::size_t(im.first + im.count) > begin)
            salt = salt * 0x9E3779B97F4A7C15ull + (im.content_hash ^ (uint64_t(uint32_t(im.first)) << 32 | uint32_t(im.count)));
    return BlockManager::chain_hash(previous, std::span(s.tokens).subspan(begin, bs), salt);
}

const Tensor& Scheduler::embeddings_of(const PromptImage& image) {
    auto it = encoded_.find(image.content_hash);
    if (it == encoded_.end()) {
        const Tensor fresh = encoder_->encode(*image.pixels);
        // The encoder's output is scratch; the cache keeps a copy.
        Encoded e{model_.backend().activation(fresh.rows, fresh.cols, DType::F32), 0};
        model_.backend().copy(fresh, e.rows);
        it = encoded_.emplace(image.content_hash, std::move(e)).first;
    }
    it->second.last_step = step_count_;
    return it->second.rows.tensor();
}

void Scheduler::encode_ahead(const PromptImage& image) {
    if (!encoder_ || !image.pixels) return;
    embeddings_of(image);
    evict_embeddings();
}

void Scheduler::evict_embeddings() {
    // A few recent images stay: a follow-up usually asks about the same one, and preempted
    // sequences come back to theirs.
    constexpr std::size_t kKeep = 4;
    while (encoded_.size() > kKeep) {
        auto oldest = encoded_.begin();
        for (auto it = encoded_.begin(); it != encoded_.end(); ++it)
            if (it->second.last_step < oldest->second.last_step) oldest = it;
        encoded_.erase(oldest);
    }
}

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
    else if (s->request.session && busy_sessions_.count(*s->request.session)) problem = "the session is already generating";
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
    if (s->request.session) busy_sessions_.insert(*s->request.session);
    waiting_.push_back(std::move(s));
}

void Scheduler::cancel(RequestId id) {
    for (auto& s : waiting_)
        if (s->id == id) s->cancelled = true;
    for (auto& s : running_)
        if (s->id == id) s->cancelled = true;
}

void Scheduler::close_session(uint64_t session) {
    const auto it = sessions_.find(session);
    if (it == sessions_.end()) return;
    for (int32_t b : it->second.blocks) blocks_.release(b);
    sessions_.erase(it);
}

void Scheduler::attach_cached_prefix(Sequence& s) {
    const int32_t bs = blocks_.block_size();
    const std::size_t limit = s.tokens.size() - 1;  // the last token is always computed, for its logits
    if (s.request.session) {
        if (const auto it = sessions_.find(*s.request.session); it != sessions_.end()) {
            Session& old = it->second;
            std::size_t lcp = 0;
            while (lcp < limit && lcp < old.tokens.size() && old.tokens[lcp] == s.tokens[lcp]) ++lcp;
            // Equal placeholder tokens with a different image behind them are not a common prefix.
            for (const PromptImage& im : s.request.images)
                if (std::size_t(im.first) < lcp &&
                    std::none_of(old.images.begin(), old.images.end(), [&](const PromptImage& o) { return same_image(o, im); }))
                    lcp = std::min(lcp, std::size_t(im.first));
            for (const PromptImage& o : old.images)
                if (std::size_t(o.first) < lcp && std::none_of(s.request.images.begin(), s.request.images.end(),
                                                                [&](const PromptImage& im) { return same_image(o, im); }))
                    lcp = std::min(lcp, std::size_t(o.first));
            const std::size_t full = lcp / std::size_t(bs);
            for (std::size_t i = 0; i < full; ++i) {
                blocks_.retain(old.blocks[i]);
                s.blocks.push_back(old.blocks[i]);
            }
            if (lcp % std::size_t(bs) != 0) {
                const int32_t b = old.blocks[full];
                if (blocks_.refs(b) > 1 || blocks_.is_registered(b)) {
                    // Shared: the new tokens must not overwrite what others read, so copy it.
                    if (const auto copy = blocks_.allocate()) {
                        model_.backend().copy_kv_block(b, *copy);
                        s.blocks.push_back(*copy);
                    } else {
                        lcp = full * std::size_t(bs);
                    }
                } else {
                    blocks_.retain(b);
                    s.blocks.push_back(b);
                }
            }
            s.computed = lcp;
            s.timings.reused_tokens = int32_t(lcp);
            return;
        }
    }
    uint64_t previous = 0;
    for (std::size_t i = 0; (i + 1) * std::size_t(bs) <= limit; ++i) {
        const uint64_t h = block_hash(s, i, previous);
        const auto b = blocks_.lookup(h);
        if (!b) break;
        s.blocks.push_back(*b);
        s.hashes.push_back(h);
        previous = h;
    }
    s.computed = s.blocks.size() * std::size_t(bs);
    if (s.timings.reused_tokens == 0) s.timings.reused_tokens = int32_t(s.computed);
}

bool Scheduler::ensure_blocks(Sequence& s, std::size_t positions) {
    const std::size_t needed = (positions + std::size_t(blocks_.block_size()) - 1) / std::size_t(blocks_.block_size());
    while (s.blocks.size() < needed) {
        if (const auto b = blocks_.allocate()) {
            s.blocks.push_back(*b);
            continue;
        }
        // Out of blocks: an idle session's cache goes first; preemption is the caller's choice.
        if (!close_idle_session(s)) return false;
    }
    return true;
}

bool Scheduler::close_idle_session(const Sequence& keep) {
    for (const auto& [id, session] : sessions_)
        if (!(keep.request.session && *keep.request.session == id)) {
            close_session(id);
            return true;
        }
    return false;
}

void Scheduler::release_blocks(Sequence& s) {
    for (int32_t b : s.blocks) blocks_.release(b);
    s.blocks.clear();
    s.hashes.clear();
}

void Scheduler::preempt(Sequence& s) {
    release_blocks(s);
    s.computed = 0;
    s.attached = false;
    s.preempted = true;
    ++preemptions_;
}

void Scheduler::register_full_blocks(Sequence& s) {
    const std::size_t bs = std::size_t(blocks_.block_size());
    while ((s.hashes.size() + 1) * bs <= s.computed) {
        const std::size_t i = s.hashes.size();
        const uint64_t h = block_hash(s, i, i ? s.hashes[i - 1] : 0);
        s.hashes.push_back(h);
        blocks_.register_block(s.blocks[i], h);
    }
}

void Scheduler::deliver(Sequence& s, int32_t token, std::vector<GenerationEvent>& events) {
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
        if (s.detok) s.text += s.detok->push(token);
        // A stop string ends the reply before it; text that may be the start of one waits.
        std::size_t keep = s.text.size();
        for (const auto& stop : s.request.stop_strings) {
            if (stop.empty()) continue;
            const std::size_t from = s.emitted > stop.size() ? s.emitted - stop.size() : 0;
            const std::size_t at = s.text.find(stop, from);
            if (at != std::string::npos) {
                keep = std::min(keep, at);
                reason = FinishReason::Stop;
            }
        }
        if (reason == FinishReason::Stop) {
            s.text.resize(keep);
        } else {
            for (const auto& stop : s.request.stop_strings)
                for (std::size_t n = std::min(stop.size() - 1, s.text.size()); n > 0; --n)
                    if (s.text.compare(s.text.size() - n, n, stop, 0, n) == 0) {
                        keep = std::min(keep, s.text.size() - n);
                        break;
                    }
        }
        if (keep > s.emitted) {
            e.text = s.text.substr(s.emitted, keep - s.emitted);
            s.emitted = keep;
        }
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
    if (reason != FinishReason::Error && !(reason == FinishReason::Stop && s.emitted < s.text.size())) {
        // Whatever the detokenizer and the stop-string check still held back is final now.
        if (s.detok) s.text += s.detok->finish();
        if (s.text.size() > s.emitted) e.text = s.text.substr(s.emitted);
        s.emitted = s.text.size();
    }
    if (s.timings.generated_tokens > 1) {
        s.timings.decode_ms = std::chrono::duration<double, std::milli>(s.last_token - s.first_token).count();
        if (s.timings.decode_ms > 0)
            s.timings.decode_tokens_per_second = (s.timings.generated_tokens - 1) * 1000.0 / s.timings.decode_ms;
    }
    e.timings = s.timings;
    events.push_back(std::move(e));

    if (s.request.session) {
        busy_sessions_.erase(*s.request.session);
        if (reason != FinishReason::Error && s.computed > 0) {
            // Keep the blocks of what was computed for the next turn.
            const std::size_t keep = (s.computed + std::size_t(blocks_.block_size()) - 1) / std::size_t(blocks_.block_size());
            for (std::size_t i = keep; i < s.blocks.size(); ++i) blocks_.release(s.blocks[i]);
            s.blocks.resize(std::min(keep, s.blocks.size()));
            std::vector<PromptImage> images;
            for (const PromptImage& im : s.request.images)
                if (std::size_t(im.first) < s.computed) images.push_back({nullptr, im.content_hash, im.first, im.count});
            sessions_[*s.request.session] = Session{std::vector<int32_t>(s.tokens.begin(), s.tokens.begin() + std::ptrdiff_t(s.computed)),
                                                    std::move(s.blocks), std::move(images)};
            s.blocks.clear();
        }
    }
    release_blocks(s);
    s.done = true;
}

void Scheduler::step(std::vector<GenerationEvent>& events) {
    ++step_count_;
    evict_embeddings();
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

    // Admit while blocks allow.
    const std::size_t bs = std::size_t(blocks_.block_size());
    while (!waiting_.empty() && running_.size() < std::size_t(options_.max_batch)) {
        Sequence& s = *waiting_.front();
        if (!s.attached) {
            attach_cached_prefix(s);
            s.attached = true;
        }
        const std::size_t total = (s.tokens.size() + bs) / bs;  // room for the next token too
        const std::size_t need = total > s.blocks.size() ? total - s.blocks.size() : 0;
        while (std::size_t(blocks_.available()) < need && close_idle_session(s)) {
        }
        if (std::size_t(blocks_.available()) < need) {
            // Not now: give back what the lookup took, so waiting never holds blocks.
            release_blocks(s);
            s.computed = 0;
            s.attached = false;
            if (running_.empty()) {
                release_blocks(s);
                finish(s, FinishReason::Error, events,
                       "the sequence needs " + std::to_string(total) + " KV blocks but the cache has " +
                           std::to_string(blocks_.num_blocks()) + "; raise cache_max_entry_count or lower session_len");
                waiting_.pop_front();
                continue;
            }
            break;
        }
        if (s.request.session) close_session(*s.request.session);  // its blocks now belong to s
        s.admitted = Clock::now();
        if (s.timings.queue_ms == 0)
            s.timings.queue_ms = std::chrono::duration<double, std::milli>(s.admitted - s.submitted).count();
        running_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
    }

    // Assemble the batch: a prompt chunk or the last sampled token of each running sequence.
    BatchLayout batch;
    last_step_ = StepStats{};
    struct Part {
        Sequence* seq;
        std::size_t count;
        int32_t logit_row;
    };
    std::vector<Part> parts;
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
        while (!ensure_blocks(s, s.computed + n)) {
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
        if (s.blocks.size() * bs < s.computed + n) {
            if (parts.empty() && i + 1 == running_.size()) {
                finish(s, FinishReason::Error, events,
                       "the KV cache (" + std::to_string(blocks_.num_blocks()) + " blocks of " + std::to_string(bs) +
                           " tokens) cannot hold this sequence; raise cache_max_entry_count");
            } else {
                preempt(s);
            }
            continue;
        }
        // Image rows of this chunk: encoded now if no cache holds them.
        const int32_t base = int32_t(batch.token_ids.size());
        bool failed = false;
        for (const PromptImage& im : s.request.images) {
            const std::size_t from = std::max(s.computed, std::size_t(im.first));
            const std::size_t to = std::min(s.computed + n, std::size_t(im.first + im.count));
            if (from >= to) continue;
            try {
                const Tensor& rows = embeddings_of(im);
                batch.inserts.push_back({rows.rows_view(int64_t(from) - im.first, int64_t(to - from)),
                                         base + int32_t(from - s.computed)});
            } catch (const std::exception& e) {
                finish(s, FinishReason::Error, events, std::string("the image could not be encoded: ") + e.what());
                failed = true;
                break;
            }
        }
        if (failed) {
            while (!batch.inserts.empty() && batch.inserts.back().first >= base) batch.inserts.pop_back();
            continue;
        }
        const int32_t seq_index = int32_t(parts.size());
        for (std::size_t k = 0; k < n; ++k) {
            const std::size_t pos = s.computed + k;
            batch.token_ids.push_back(s.tokens[pos]);
            batch.positions.push_back(int32_t(pos));
            batch.token_seq.push_back(seq_index);
            // transformers runs the whole prompt in one forward, so dynamic RoPE sees its full length.
            batch.rope_lengths.push_back(int32_t(pos < s.prompt_len ? std::max(s.prompt_len, pos + 1) : pos + 1));
        }
        int32_t row = -1;
        if (s.computed + n == s.tokens.size()) {
            row = int32_t(batch.logit_rows.size());
            batch.logit_rows.push_back(int32_t(batch.token_ids.size() - 1));
        }
        parts.push_back({&s, n, row});
        ++last_step_.sequences;
        if (remaining > 1) last_step_.prompt_tokens += int32_t(n);
        last_step_.context_tokens += int64_t(s.computed + n);
    }

    // Preempted sequences go back to the front of the queue, oldest first.
    for (auto it = running_.rbegin(); it != running_.rend(); ++it)
        if (!(*it)->done && (*it)->preempted) {
            (*it)->preempted = false;
            waiting_.push_front(std::move(*it));
        }
    running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());

    if (!parts.empty()) {
        for (const auto& p : parts) batch.max_blocks = std::max(batch.max_blocks, int32_t(p.seq->blocks.size()));
        batch.block_tables.assign(parts.size() * std::size_t(batch.max_blocks), 0);
        for (std::size_t i = 0; i < parts.size(); ++i)
            std::copy(parts[i].seq->blocks.begin(), parts[i].seq->blocks.end(),
                      batch.block_tables.begin() + std::ptrdiff_t(i * std::size_t(batch.max_blocks)));

        const Tensor logits = model_.forward(batch);
        // Plain greedy rows are decided where the logits are; only rows that need the sampler's
        // processors come to the host.
        bool all_argmax = true;
        for (const auto& p : parts)
            if (p.logit_row >= 0 && !p.seq->sampler.argmax_only()) all_argmax = false;
        std::vector<int32_t> chosen(batch.logit_rows.size());
        if (!logits.empty()) {
            if (all_argmax) {
                model_.backend().argmax_rows(logits, chosen);
            } else {
                // Sampled where the logits are; each sequence draws from its own stream.
                std::vector<Backend::SampleRow> rows(batch.logit_rows.size());
                for (const auto& p : parts) {
                    if (p.logit_row < 0) continue;
                    Backend::SampleRow& r = rows[std::size_t(p.logit_row)];
                    r.params = p.seq->sampler.params();
                    if (r.params.repetition_penalty != 1.0f) r.penalized = distinct_tokens(p.seq->tokens);
                    r.u = p.seq->sampler.draw();
                }
                model_.backend().sample_rows(logits, rows, chosen);
            }
        }
        for (const auto& p : parts) {
            Sequence& s = *p.seq;
            s.computed += p.count;
            register_full_blocks(s);
            if (p.logit_row >= 0) deliver(s, chosen[std::size_t(p.logit_row)], events);
        }
    }
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
