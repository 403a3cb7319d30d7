// The engine's behaviour on the CPU backend with the real stories260K model and tiny checkpoints:
// batching gives the same tokens as running alone, sessions reuse their KV cache, cancellation,
// preemption under a small pool, seeds, stop strings, errors, and streaming text.
#include <QtTest>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <thread>

#include "engine/backend/backend.h"
#include "engine/runtime/image_input.h"
#include "engine/util/error.h"
#include "engine/model/model.h"
#include "engine/runtime/scheduler.h"
#include "engine/util/thread_pool.h"
#include "engine/text/tokenizer.h"
#include "engine/text/unicode.h"
#include "tests/support/engine_runner.h"
#include "tests/support/faulty_backend.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_models.h"

using namespace lumen;
using namespace lumen::test;
namespace fs = std::filesystem;

namespace {

const char* kPrompts[] = {"Once", "There was a big", "Tom and Sue went to the park to play with their new red ball",
                          "One day", "The cat sat", "Lily wanted to eat a big cake, but her mom said no. She was sad",
                          "A", "Once upon a time, in a small house near the woods, there lived"};

// Embeddings made from the pixels' first value, row and column, with a count of encodes: enough
// to tell images apart and to see when one is encoded again.
class FakeEncoder final : public ImageEncoder {
public:
    FakeEncoder(Backend& b, int64_t hidden) : backend_(b), hidden_(hidden) {}
    int64_t tokens_for(const ImagePixels& p) const override { return int64_t(p.tiles) * 8; }
    Tensor encode(const ImagePixels& p) override {
        ++encodes;
        const int64_t rows = tokens_for(p);
        out_ = backend_.activation(rows, hidden_, DType::F32);
        std::vector<float> v(std::size_t(rows * hidden_));
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < hidden_; ++c)
                v[std::size_t(r * hidden_ + c)] = float(p.values[0]) / 128.0f - 1.0f + 0.05f * float((r * 7 + c) % 11) - 0.25f;
        backend_.write(out_, v);
        return out_;
    }
    uint64_t weight_bytes() const override { return 0; }
    int encodes = 0;

private:
    Backend& backend_;
    int64_t hidden_;
    Buffer out_;
};

PromptImage image_of(uint8_t value, uint64_t hash, int32_t first) {
    auto px = std::make_shared<ImagePixels>();
    px->tiles = 1, px->channels = 1, px->height = 1, px->width = 1;
    px->values = {value};
    return {px, hash, first, 8};
}

}  // namespace

class TestEngine : public QObject {
    Q_OBJECT
private:
    fs::path stories_;

    std::vector<int32_t> encode(EngineRunner& r, const std::string& text) { return r.engine().tokenizer().encode(text); }

private slots:
    void initTestCase() {
        const auto data = shared_data();
        if (!data) QSKIP("../shared/data is absent; these tests run the real stories260K model");
        stories_ = *data / "models" / "stories260K-hf";
    }

    void threadPoolCoversEveryIndexOnce() {
        ThreadPool pool(4);
        for (std::size_t n : {1, 7, 100, 1000, 12345})
            for (std::size_t grain : {1, 3, 64}) {
                std::vector<std::atomic<int>> hits(n);
                std::mutex mutex;
                std::size_t shortest = n, calls = 0;
                pool.parallel_for(n, grain, [&](std::size_t begin, std::size_t end) {
                    for (std::size_t i = begin; i < end; ++i) ++hits[i];
                    std::lock_guard lock(mutex);
                    shortest = std::min(shortest, end - begin);
                    ++calls;
                });
                QVERIFY(std::all_of(hits.begin(), hits.end(), [](const std::atomic<int>& h) { return h == 1; }));
                QVERIFY(shortest >= std::min(grain, n));
                QVERIFY(calls <= 4 * pool.size());
            }
    }

    void concurrentRequestsMatchSoloRuns() {
        EngineRunner solo(stories_);
        std::vector<std::vector<int32_t>> expected;
        for (const char* p : kPrompts) expected.push_back(solo.run(greedy(encode(solo, p), 48)).ids);

        EngineRunner batched(stories_);
        std::vector<RequestId> ids;
        for (std::size_t i = 0; i < std::size(kPrompts); ++i)
            ids.push_back(batched.submit(greedy(encode(batched, kPrompts[i]), 48)));
        for (std::size_t i = 0; i < ids.size(); ++i) {
            const Collected c = batched.wait(ids[i]);
            QCOMPARE(c.final_event.finish, FinishReason::Length);
            QCOMPARE(c.ids, expected[i]);
        }
    }

    void chunkedPrefillMatchesWholePrefill() {
        EngineOptions chunked;
        chunked.prefill_chunk = 7;  // prompts arrive over several steps
        EngineRunner a(stories_), b(stories_, chunked);
        const auto prompt = encode(a, kPrompts[7]);
        const Collected chunked_run = b.run(greedy(prompt, 40));
        QVERIFY2(chunked_run.final_event.error.empty(), chunked_run.final_event.error.c_str());
        QCOMPARE(chunked_run.ids, a.run(greedy(prompt, 40)).ids);
    }

    void secondTurnReusesTheFirstTurnsBlocks() {
        EngineRunner r(stories_);
        auto first = greedy(encode(r, "Once upon a time, there was a little girl"), 70);
        first.session = 7;
        const Collected turn1 = r.run(first);
        QCOMPARE(turn1.final_event.timings.reused_tokens, 0);

        // The follow-up: everything so far, then more text.
        std::vector<int32_t> prompt = first.prompt;
        prompt.insert(prompt.end(), turn1.ids.begin(), turn1.ids.end());
        const auto more = r.engine().tokenizer().encode(" She said", {.add_special_tokens = false});
        prompt.insert(prompt.end(), more.begin(), more.end());
        auto second = greedy(prompt, 30);
        second.session = 7;
        const Collected turn2 = r.run(second);
        // Every token of turn 1 whose keys were computed (all but the last reply token) is reused.
        QCOMPARE(turn2.final_event.timings.reused_tokens, int32_t(first.prompt.size() + turn1.ids.size() - 1));
        QCOMPARE(turn2.final_event.timings.prompt_tokens, int32_t(prompt.size()));

        EngineRunner fresh(stories_);
        QCOMPARE(turn2.ids, fresh.run(greedy(prompt, 30)).ids);
    }

    void sharedPrefixIsComputedOnce() {
        EngineRunner r(stories_);
        std::string long_prefix;
        for (int i = 0; i < 12; ++i) long_prefix += "Once upon a time, there was a little girl. ";
        const auto a = encode(r, long_prefix + "She liked cats.");
        const auto b = encode(r, long_prefix + "He liked dogs.");
        const Collected first = r.run(greedy(a, 8));
        const Collected second = r.run(greedy(b, 8));
        QCOMPARE(first.final_event.timings.reused_tokens, 0);
        // The full 64-token blocks both prompts share come from the cache.
        std::size_t common = 0;
        while (a[common] == b[common]) ++common;
        QCOMPARE(second.final_event.timings.reused_tokens, int32_t(common / 64 * 64));
        QVERIFY(second.final_event.timings.reused_tokens >= 64);
        EngineRunner fresh(stories_);
        QCOMPARE(second.ids, fresh.run(greedy(b, 8)).ids);
    }

    void cancelEndsWithinOneStep() {
        EngineRunner r(stories_);
        std::atomic<RequestId> id{0};
        std::atomic<bool> cancelled{false};
        r.on_event = [&](const GenerationEvent& e) {
            if (!e.ids.empty() && !cancelled.exchange(true)) r.engine().cancel(e.request);
        };
        id = r.submit(greedy(encode(r, "Once"), 400));
        const Collected c = r.wait(id);
        QCOMPARE(c.final_event.finish, FinishReason::Cancelled);
        // The cancel is seen before the next step: at most the step already under way finishes.
        QVERIFY2(c.ids.size() <= 2, qPrintable(QString::number(c.ids.size())));
    }

    void smallPoolPreemptsAndStillFinishesEverything() {
        EngineRunner solo(stories_);
        std::vector<std::vector<int32_t>> expected;
        for (int i = 0; i < 4; ++i) expected.push_back(solo.run(greedy(encode(solo, kPrompts[i]), 150)).ids);

        EngineOptions tiny;
        tiny.cache_max_entry_count = 6;  // 6 blocks of 64: not enough for four 150-token replies at once
        EngineRunner r(stories_, tiny);
        std::vector<RequestId> ids;
        for (int i = 0; i < 4; ++i) ids.push_back(r.submit(greedy(encode(r, kPrompts[i]), 150)));
        for (int i = 0; i < 4; ++i) {
            const Collected c = r.wait(ids[std::size_t(i)]);
            QVERIFY2(c.final_event.error.empty(), c.final_event.error.c_str());
            QCOMPARE(c.ids.size(), expected[std::size_t(i)].size());
            QCOMPARE(c.ids, expected[std::size_t(i)]);
        }
        QVERIFY(r.engine().preemptions() > 0);
    }

    // The same through the scheduler alone, so every request is queued before the first step and
    // the preemption pattern does not depend on thread timing.
    void schedulerPreemptionIsExact() {
        EngineRunner solo(stories_);
        std::vector<std::vector<int32_t>> prompts, expected;
        for (int i = 0; i < 5; ++i) {
            prompts.push_back(encode(solo, kPrompts[i]));
            expected.push_back(solo.run(greedy(prompts.back(), 150)).ids);
        }
        auto backend = make_cpu_backend();
        Model model(stories_, *backend);
        const auto tokenizer = Tokenizer::load(stories_);
        const auto& t = model.text();
        for (int blocks : {5, 7, 9}) {
            backend->allocate_kv_cache({int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), 64, blocks, DType::F32});
            EngineOptions options;
            options.prefill_chunk = 16;
            Scheduler scheduler(model, tokenizer.get(), options, blocks, 512);
            std::vector<GenerationEvent> events;
            for (std::size_t i = 0; i < prompts.size(); ++i)
                scheduler.add(RequestId(i + 1), greedy(prompts[i], 150), Scheduler::Clock::now(), events);
            int steps = 0;
            while (scheduler.has_work() && steps++ < 10000) scheduler.step(events);
            QVERIFY(!scheduler.has_work());
            QVERIFY(scheduler.preemptions() > 0);
            std::map<RequestId, std::vector<int32_t>> got;
            for (const auto& e : events) {
                QVERIFY2(e.finish != FinishReason::Error, e.error.c_str());
                got[e.request].insert(got[e.request].end(), e.ids.begin(), e.ids.end());
            }
            for (std::size_t i = 0; i < prompts.size(); ++i) QCOMPARE(got[RequestId(i + 1)], expected[i]);
            // Every block is back: free, or cached for reuse.
            QCOMPARE(scheduler.blocks().available(), blocks);
        }
    }

    // A follow-up too long for the pool, admitted with nothing else running, ends with an error.
    // It had taken its session's blocks, which the session still holds: it gives back its own
    // references once (the scheduler once released them twice on this path), so the session
    // keeps working and every block comes back when it closes.
    void sessionTurnTooLongForThePoolReturnsItsBlocks() {
        auto backend = make_cpu_backend();
        Model model(stories_, *backend);
        const auto tokenizer = Tokenizer::load(stories_);
        const auto& t = model.text();
        const int blocks = 3;
        backend->allocate_kv_cache({int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), 64, blocks, DType::F32});
        Scheduler scheduler(model, tokenizer.get(), {}, blocks, 512);
        int final_events = 0;
        auto turn = [&](RequestId id, std::vector<int32_t> prompt, int32_t max_new) {
            std::vector<GenerationEvent> events;
            GenerationRequest r = greedy(std::move(prompt), max_new);
            r.session = 5;
            scheduler.add(id, std::move(r), Scheduler::Clock::now(), events);
            while (scheduler.has_work()) scheduler.step(events);
            Collected c;
            for (const auto& e : events) {
                c.ids.insert(c.ids.end(), e.ids.begin(), e.ids.end());
                if (e.finish != FinishReason::None) {
                    c.final_event = e;
                    ++final_events;
                }
            }
            return c;
        };
        const std::vector<int32_t> prompt = tokenizer->encode(kPrompts[7]);
        const Collected first = turn(1, prompt, 60);
        QCOMPARE(first.final_event.finish, FinishReason::Length);
        QCOMPARE(scheduler.sequences().idle_sessions(), std::size_t(1));

        std::vector<int32_t> longer = prompt;
        longer.insert(longer.end(), first.ids.begin(), first.ids.end());
        longer.resize(200, 300);  // 4 blocks with the next token
        const Collected too_long = turn(2, longer, 10);
        QCOMPARE(too_long.final_event.finish, FinishReason::Error);
        QCOMPARE(final_events, 2);
        QVERIFY2(too_long.final_event.error.find("needs 4 KV blocks") != std::string::npos, too_long.final_event.error.c_str());
        QCOMPARE(scheduler.sequences().idle_sessions(), std::size_t(1));

        // The session's turn is still there to reuse.
        std::vector<int32_t> next = prompt;
        next.insert(next.end(), first.ids.begin(), first.ids.end());
        const Collected third = turn(3, next, 10);
        QVERIFY2(third.final_event.finish == FinishReason::Length, third.final_event.error.c_str());
        QCOMPARE(third.final_event.timings.reused_tokens, int32_t(prompt.size() + first.ids.size() - 1));
        scheduler.close_session(5);
        QCOMPARE(scheduler.blocks().available(), blocks);
        for (int32_t b = 0; b < blocks; ++b) QCOMPARE(scheduler.blocks().refs(b), 0);
    }

    // Images replace their placeholder rows; they are encoded only when a chunk needs them, and
    // equal tokens with a different image behind them are never taken from the cache.
    void imagesInPrompts() {
        auto backend = make_cpu_backend();
        Model model(stories_, *backend);
        const auto tokenizer = Tokenizer::load(stories_);
        const auto& t = model.text();
        const int blocks = 32;
        backend->allocate_kv_cache({int32_t(t.num_layers), int32_t(t.num_kv_heads), int32_t(t.head_dim), 64, blocks, DType::F32});
        FakeEncoder encoder(*backend, t.hidden_size);
        // 70 text tokens, 8 placeholder tokens (id 5), then more text: block 0 is text, block 1 has the image.
        std::vector<int32_t> prompt = tokenizer->encode(kPrompts[5]);
        while (prompt.size() < 70) prompt.push_back(prompt[prompt.size() % 20]);
        prompt.resize(70);
        const std::size_t first = prompt.size();
        prompt.insert(prompt.end(), 8, 5);
        for (int32_t id : tokenizer->encode(" and then they went home", {.add_special_tokens = false})) prompt.push_back(id);

        auto run = [&](Scheduler& sched, std::vector<int32_t> ids, std::vector<PromptImage> images, std::optional<uint64_t> session = {}) {
            std::vector<GenerationEvent> events;
            GenerationRequest r = greedy(std::move(ids), 12);
            r.images = std::move(images);
            r.session = session;
            sched.add(1, std::move(r), Scheduler::Clock::now(), events);
            while (sched.has_work()) sched.step(events);
            Collected c;
            for (const auto& e : events) {
                c.ids.insert(c.ids.end(), e.ids.begin(), e.ids.end());
                if (e.finish != FinishReason::None) c.final_event = e;
            }
            return c;
        };
        EngineOptions options;
        Scheduler sched(model, tokenizer.get(), options, blocks, 512, &encoder);
        const Collected a = run(sched, prompt, {image_of(192, 111, int32_t(first))});
        QVERIFY2(a.final_event.finish == FinishReason::Length, a.final_event.error.c_str());
        QCOMPARE(encoder.encodes, 1);
        // The same tokens with another image: block 0 (text only) comes from the cache, block 1
        // (with the image) is computed again, and the reply differs.
        const Collected b = run(sched, prompt, {image_of(64, 222, int32_t(first))});
        QCOMPARE(encoder.encodes, 2);
        QCOMPARE(b.final_event.timings.reused_tokens, 64);
        QVERIFY(a.ids != b.ids);
        // The first image again: block 0 is cached and the image's rows are too, so it is not
        // encoded again.
        const Collected a2 = run(sched, prompt, {image_of(192, 111, int32_t(first))});
        QCOMPARE(a2.ids, a.ids);
        QCOMPARE(a2.final_event.timings.reused_tokens, 64);
        QCOMPARE(encoder.encodes, 2);

        // Chunked prefill cutting the image in three gives the same reply.
        EngineOptions chunked;
        chunked.prefill_chunk = 3;
        Scheduler small_steps(model, tokenizer.get(), chunked, blocks, 512, &encoder);
        QCOMPARE(run(small_steps, prompt, {image_of(192, 111, int32_t(first))}).ids, a.ids);

        // A session's next turn reuses the turn with its image without encoding it again.
        Scheduler sessions(model, tokenizer.get(), options, blocks, 512, &encoder);
        const int before = encoder.encodes;
        const Collected turn1 = run(sessions, prompt, {image_of(160, 333, int32_t(first))}, 9);
        std::vector<int32_t> next = prompt;
        next.insert(next.end(), turn1.ids.begin(), turn1.ids.end());
        for (int32_t id : tokenizer->encode(" The end.", {.add_special_tokens = false})) next.push_back(id);
        const Collected turn2 = run(sessions, next, {image_of(160, 333, int32_t(first))}, 9);
        QVERIFY2(turn2.final_event.finish == FinishReason::Length, turn2.final_event.error.c_str());
        QCOMPARE(turn2.final_event.timings.reused_tokens, int32_t(prompt.size() + turn1.ids.size() - 1));
        QCOMPARE(encoder.encodes, before + 1);
        // ... and a different image under the same tokens is not mistaken for it.
        const Collected other = run(sessions, next, {image_of(32, 444, int32_t(first))}, 9);
        QCOMPARE(other.final_event.timings.reused_tokens, int32_t(first));
        QCOMPARE(encoder.encodes, before + 2);

        // An image encoded ahead (while its question was being written) is not encoded again for
        // the request, which replies as it would have.
        Scheduler ahead(model, tokenizer.get(), options, blocks, 512, &encoder);
        const int before_ahead = encoder.encodes;
        ahead.encode_ahead(image_of(96, 555, int32_t(first)));
        QCOMPARE(encoder.encodes, before_ahead + 1);
        const Collected early = run(ahead, prompt, {image_of(96, 555, int32_t(first))});
        QVERIFY2(early.final_event.finish == FinishReason::Length, early.final_event.error.c_str());
        QCOMPARE(encoder.encodes, before_ahead + 1);
        Scheduler plain(model, tokenizer.get(), options, blocks, 512, &encoder);
        QCOMPARE(early.ids, run(plain, prompt, {image_of(96, 556, int32_t(first))}).ids);

        // Requests whose images do not fit their prompt, and images for a model without an encoder.
        const Collected wrong = run(sched, prompt, {image_of(192, 1, int32_t(prompt.size()) - 4)});
        QVERIFY(QString::fromStdString(wrong.final_event.error).contains("outside the prompt"));
        Scheduler text_only(model, tokenizer.get(), options, blocks, 512);
        const Collected none = run(text_only, prompt, {image_of(192, 1, int32_t(first))});
        QVERIFY(QString::fromStdString(none.final_event.error).contains("text only"));
    }

    void seedReproducesSampling() {
        EngineRunner r(stories_);
        auto request = [&](uint64_t seed) {
            GenerationRequest g = greedy(encode(r, "Once"), 60);
            g.sampling.temperature = 1.0f;
            g.sampling.top_p = 0.9f;
            g.sampling.seed = seed;
            return g;
        };
        const auto a = r.run(request(133742)).ids;
        QCOMPARE(r.run(request(133742)).ids, a);
        QVERIFY(r.run(request(7)).ids != a);
    }

    void logprobsAreTheModelsOwn() {
        EngineRunner r(stories_);
        GenerationRequest g = greedy(encode(r, "Once upon"), 12);
        g.logprobs = 5;
        const Collected greedy_run = r.run(g);
        QCOMPARE(greedy_run.logprobs.size(), greedy_run.ids.size());
        for (std::size_t i = 0; i < greedy_run.ids.size(); ++i) {
            const TokenLogprobs& lp = greedy_run.logprobs[i];
            QCOMPARE(lp.chosen.id, greedy_run.ids[i]);
            QCOMPARE(lp.top.size(), std::size_t(5));
            // Greedy takes the most likely token.
            QCOMPARE(lp.top[0].id, lp.chosen.id);
            QCOMPARE(lp.top[0].logprob, lp.chosen.logprob);
            double mass = 0;
            for (std::size_t k = 0; k < lp.top.size(); ++k) {
                QVERIFY(lp.top[k].logprob <= 0);
                if (k > 0) QVERIFY(lp.top[k].logprob <= lp.top[k - 1].logprob);
                mass += std::exp(double(lp.top[k].logprob));
            }
            QVERIFY(mass <= 1.0 + 1e-5);
        }
        // The model's distribution, whatever the sampling settings: the first step (same prompt)
        // reports the same alternatives at any temperature and penalty.
        g.sampling.temperature = 1.7f;
        g.sampling.repetition_penalty = 1.3f;
        g.sampling.frequency_penalty = 1.0f;
        g.sampling.seed = 11;
        const Collected sampled = r.run(g);
        QCOMPARE(sampled.logprobs.size(), sampled.ids.size());
        for (std::size_t k = 0; k < 5; ++k) {
            QCOMPARE(sampled.logprobs[0].top[k].id, greedy_run.logprobs[0].top[k].id);
            QCOMPARE(sampled.logprobs[0].top[k].logprob, greedy_run.logprobs[0].top[k].logprob);
        }
        for (std::size_t i = 0; i < sampled.ids.size(); ++i) QCOMPARE(sampled.logprobs[i].chosen.id, sampled.ids[i]);
        // Asked for none, none come.
        g.logprobs = -1;
        QVERIFY(r.run(g).logprobs.empty());
    }

    void stopStringsEndTheReplyBeforeThem() {
        EngineRunner r(stories_);
        auto g = greedy(encode(r, ""), 100);
        g.stop_strings = {"Lily"};
        const Collected c = r.run(g);
        QCOMPARE(c.final_event.finish, FinishReason::Stop);
        QCOMPARE(c.text, std::string("Once upon a time, there was a little girl named "));
    }

    void errorsAreEventsNotCrashes() {
        EngineRunner r(stories_);
        std::vector<int32_t> long_prompt(600, 300);
        Collected c = r.run(greedy(long_prompt, 4));
        QCOMPARE(c.final_event.finish, FinishReason::Error);
        QVERIFY2(QString::fromStdString(c.final_event.error).contains("context holds 512"), c.final_event.error.c_str());
        c = r.run(greedy({1, 99999}, 4));
        QVERIFY(c.final_event.error.find("outside the vocabulary") != std::string::npos);
        c = r.run(greedy({}, 4));
        QVERIFY(c.final_event.error.find("empty") != std::string::npos);
        // The engine still works afterwards.
        QCOMPARE(r.run(greedy(encode(r, "Once"), 3)).ids.size(), std::size_t(3));
        // A pool too small for one sequence says so.
        EngineOptions one_block;
        one_block.cache_max_entry_count = 1;
        EngineRunner small(stories_, one_block);
        c = small.run(greedy(encode(small, "Once"), 100));
        QCOMPARE(c.final_event.finish, FinishReason::Error);
        QVERIFY2(c.final_event.error.find("KV") != std::string::npos, c.final_event.error.c_str());
        QVERIFY_THROWS_EXCEPTION(Error, Engine::create("/nonexistent", {}, [](const GenerationEvent&) {}));
    }

    // A device that fails for good mid-batch: the requests in flight end with its message, new
    // ones are refused with it, and a new engine (a reload) serves again.
    void lostDeviceFailsEveryRequestUntilReload() {
        EngineOptions o;
        FaultyBackend* faulty = nullptr;
        o.backend = [&](std::string* description) {
            *description = "cpu (failing at its fifth forward)";
            auto b = std::make_unique<FaultyBackend>(make_cpu_backend(), 5, [](Backend&) {
                throw Error("the GPU stopped working (injected in a test)", Error::Scope::Device);
            });
            faulty = b.get();
            return b;
        };
        EngineRunner r(stories_, o);
        const RequestId a = r.submit(greedy(encode(r, "Once upon a time"), 40));
        const RequestId b = r.submit(greedy(encode(r, "The little dog"), 40));
        for (RequestId id : {a, b}) {
            const Collected c = r.wait(id);
            QCOMPARE(c.final_event.finish, FinishReason::Error);
            QVERIFY2(c.final_event.error.find("stopped working (injected") != std::string::npos, c.final_event.error.c_str());
            QVERIFY(c.ids.size() < 40);
        }
        const int forwards = faulty->forwards();
        QCOMPARE(forwards, 5);
        const Collected refused = r.run(greedy(encode(r, "Once"), 3));
        QCOMPARE(refused.final_event.finish, FinishReason::Error);
        QVERIFY2(refused.final_event.error.find("stopped working (injected") != std::string::npos, refused.final_event.error.c_str());
        QCOMPARE(faulty->forwards(), forwards);  // refused without running anything
        EngineRunner reloaded(stories_);
        const Collected fine = reloaded.run(greedy(encode(reloaded, "Once"), 3));
        QCOMPARE(fine.final_event.finish, FinishReason::Length);
        QCOMPARE(fine.ids.size(), std::size_t(3));
    }

    // Shutting an engine down gives every request it still had a final, cancelled event.
    // One sequence at a time and thousands of tokens queued: most are still waiting when it goes.
    void shutdownEndsEveryRequest() {
        EngineOptions one_at_a_time;
        one_at_a_time.max_batch = 1;
        EngineRunner r(stories_, one_at_a_time);
        std::vector<RequestId> ids;
        for (int i = 0; i < 6; ++i) ids.push_back(r.submit(greedy(encode(r, "Once upon a time"), 480)));
        r.shut_down();
        int cancelled = 0;
        for (RequestId id : ids) {
            const Collected c = r.wait(id);
            QVERIFY(c.final_event.finish == FinishReason::Cancelled || c.final_event.finish == FinishReason::Length);
            if (c.final_event.finish == FinishReason::Cancelled) {
                ++cancelled;
                QVERIFY2(c.final_event.error.find("shut down") != std::string::npos, c.final_event.error.c_str());
            }
        }
        QVERIFY(cancelled > 0);
    }

    void generationStopsAtTheContext() {
        EngineOptions o;
        o.session_len = 40;
        EngineRunner r(stories_, o);
        const auto prompt = encode(r, "Once upon a time");
        const Collected c = r.run(greedy(prompt, 1000));
        QCOMPARE(c.final_event.finish, FinishReason::Length);
        QCOMPARE(c.ids.size() + prompt.size(), std::size_t(40));
    }

    // Streamed deltas are whole characters and add up to decode(ids), for models whose output is
    // byte-level (Qwen2) or byte-fallback (InternLM2) pieces of Chinese, emoji and the rest.
    void streamedDeltasConcatenateToTheText_data() {
        QTest::addColumn<QString>("model");
        QTest::newRow("qwen2") << "qwen2";
        QTest::newRow("internlm2") << "internlm2";
        QTest::newRow("llama") << "llama";
    }
    void streamedDeltasConcatenateToTheText() {
        QFETCH(QString, model);
        const TinySpec spec = load_tiny_spec();
        const TinyModel* m = nullptr;
        for (const auto& x : spec.models)
            if (x.name == model.toStdString()) m = &x;
        QTemporaryDir tmp;
        build_tiny_model(spec, *m, "bfloat16", *shared_data() / "tokenizers", path_of(tmp));
        EngineRunner r(path_of(tmp));
        GenerationRequest g = greedy(encode(r, "你好，世界！👋 Hello"), 120);
        g.sampling.temperature = 1.2f;  // a random model wanders over the whole vocabulary
        g.sampling.seed = 99;
        const Collected c = r.run(g);
        std::string joined;
        for (const auto& d : c.deltas) {
            QVERIFY(!d.empty());
            QVERIFY(unicode::is_valid_utf8(d));
            joined += d;
        }
        QCOMPARE(joined, r.engine().tokenizer().decode(c.ids, true));
        QCOMPARE(c.text, joined);
        bool non_ascii = false;
        for (unsigned char ch : joined) non_ascii = non_ascii || ch >= 0x80;
        QVERIFY(non_ascii);
    }

    void threadSafeSubmission() {
        EngineRunner r(stories_);
        std::vector<std::thread> threads;
        std::vector<RequestId> ids(8);
        for (int t = 0; t < 8; ++t)
            threads.emplace_back([&, t] { ids[std::size_t(t)] = r.submit(greedy(r.engine().tokenizer().encode(kPrompts[t]), 10)); });
        for (auto& t : threads) t.join();
        for (RequestId id : ids) QCOMPARE(r.wait(id).ids.size(), std::size_t(10));
    }
};

QTEST_GUILESS_MAIN(TestEngine)
#include "test_engine.moc"
