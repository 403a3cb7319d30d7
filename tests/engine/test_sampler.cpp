// The sampler's processors (transformers' semantics and order) and the KV block manager.
#include <QtTest>
#include <cmath>
#include <map>

#include "engine/runtime/block_manager.h"
#include "engine/model/generation_config.h"
#include "engine/runtime/sampler.h"

using namespace lumen;

namespace {

// How often each token comes out of `draws` samples of fixed logits.
std::map<int32_t, int> histogram(const SamplingParams& p, const std::vector<float>& logits, int draws,
                                 const std::vector<int32_t>& history = {}) {
    Sampler s(p);
    std::map<int32_t, int> h;
    for (int i = 0; i < draws; ++i) {
        std::vector<float> l = logits;
        ++h[s.sample(l, history)];
    }
    return h;
}

}  // namespace

class TestSampler : public QObject {
    Q_OBJECT
private slots:
    void greedyTakesTheMaximum() {
        SamplingParams p;
        p.temperature = 0;
        Sampler s(p);
        std::vector<float> l{0.1f, 3.0f, -1.0f, 2.9f};
        QCOMPARE(s.sample(l, {}), 1);
        p.temperature = 0.7f;
        p.top_k = 1;
        Sampler k1(p);
        l = {0.1f, 3.0f, -1.0f, 2.9f};
        QCOMPARE(k1.sample(l, {}), 1);
    }

    void repetitionPenaltyDividesPositiveAndMultipliesNegative() {
        SamplingParams p;
        p.temperature = 0;
        p.repetition_penalty = 2.0f;
        Sampler s(p);
        // Token 1 (4.0 -> 2.0) loses to token 3 (3.0); token 0 (-1 -> -2) stays below.
        std::vector<float> l{-1.0f, 4.0f, 0.0f, 3.0f};
        QCOMPARE(s.sample(l, std::vector<int32_t>{1, 1, 0}), 3);
        QCOMPARE(l[1], 2.0f);
        QCOMPARE(l[0], -2.0f);
    }

    void presenceAndFrequencyPenaltiesLowerWhatTheReplyHolds() {
        SamplingParams p;
        p.temperature = 0;
        p.presence_penalty = 0.5f;
        p.frequency_penalty = 0.25f;
        Sampler s(p);
        // OpenAI's definition: logit - presence (once a token appears) - frequency x count, over the
        // reply only; the prompt's tokens (history without reply) are not lowered.
        std::vector<float> l{1.0f, 4.0f, 0.0f, 3.0f};
        const std::vector<int32_t> history{0, 0, 3, 1, 1, 1, 1};
        QCOMPARE(s.sample(l, history, std::span(history).subspan(3)), 3);
        QCOMPARE(l[1], 4.0f - 0.5f - 4 * 0.25f);
        QCOMPARE(l[3], 3.0f);
        QCOMPARE(l[0], 1.0f);
        // With the repetition penalty too: divided first, then lowered (vLLM's order).
        p.repetition_penalty = 2.0f;
        Sampler both(p);
        l = {1.0f, 4.0f, 0.0f, 3.0f};
        both.sample(l, history, std::span(history).subspan(3));
        QCOMPARE(l[1], 2.0f - 0.5f - 4 * 0.25f);
        QCOMPARE(l[3], 1.5f);
        QVERIFY(!both.argmax_only());
    }

    void topKKeepsOnlyTheBest() {
        SamplingParams p;
        p.top_k = 2;
        p.seed = 7;
        const auto h = histogram(p, {1.0f, 1.1f, 5.0f, 4.9f, 0.0f}, 2000);
        QCOMPARE(h.size(), std::size_t(2));
        QVERIFY(h.count(2) && h.count(3));
    }

    void topPKeepsTheSmallestSetAboveP() {
        // Probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps the first two (0.5 alone is not enough).
        SamplingParams p;
        p.top_p = 0.7f;
        p.seed = 3;
        const std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.2f)};
        auto h = histogram(p, logits, 4000);
        QCOMPARE(h.size(), std::size_t(2));
        QVERIFY(std::abs(h[0] / 4000.0 - 0.625) < 0.03);  // 0.5 / 0.8
        p.top_p = 0.5f;  // exactly the first token's mass: transformers keeps just it
        h = histogram(p, logits, 200);
        QCOMPARE(h.size(), std::size_t(1));
    }

    void topPReachesDeepIntoLargeVocabularies() {
        // 150k nearly equal logits: top_p 0.5 keeps the best half, far beyond the part of the
        // ranking the sampler sorts first, and nothing of the other half.
        const int32_t n = 150000;
        std::vector<float> logits(static_cast<std::size_t>(n));
        for (int32_t i = 0; i < n; ++i) logits[std::size_t(i)] = -1e-6f * float(i);
        SamplingParams p;
        p.top_p = 0.5f;
        p.top_k = 0;
        p.seed = 5;
        const auto h = histogram(p, logits, 300);
        QVERIFY(h.rbegin()->first < n / 2 + 100);
        QVERIFY(h.rbegin()->first > n / 4);
    }

    void minPDropsTokensFarBelowTheBest() {
        SamplingParams p;
        p.min_p = 0.5f;
        p.seed = 11;
        // Probabilities 0.6, 0.35, 0.05: the threshold is 0.3, so the last goes.
        const auto h = histogram(p, {std::log(0.6f), std::log(0.35f), std::log(0.05f)}, 2000);
        QCOMPARE(h.size(), std::size_t(2));
    }

    void temperatureSharpens() {
        SamplingParams p;
        p.seed = 5;
        p.temperature = 0.25f;
        const auto cold = histogram(p, {0.0f, 1.0f}, 4000);
        p.temperature = 4.0f;
        const auto hot = histogram(p, {0.0f, 1.0f}, 4000);
        QVERIFY(cold.at(1) > 3800);
        QVERIFY(hot.at(1) < 2600);
    }

    void seedRepeats() {
        SamplingParams p;
        p.seed = 42;
        std::vector<int32_t> a, b, c;
        Sampler s1(p), s2(p);
        p.seed = 43;
        Sampler s3(p);
        for (int i = 0; i < 50; ++i) {
            std::vector<float> l1(100), l2(100), l3(100);
            for (int k = 0; k < 100; ++k) l1[std::size_t(k)] = l2[std::size_t(k)] = l3[std::size_t(k)] = std::sin(float(k));
            a.push_back(s1.sample(l1, {}));
            b.push_back(s2.sample(l2, {}));
            c.push_back(s3.sample(l3, {}));
        }
        QCOMPARE(a, b);
        QVERIFY(a != c);
    }

    void blocksAreCountedAndCached() {
        BlockManager m(4, 64);
        QCOMPARE(m.available(), 4);
        const auto a = m.allocate(), b = m.allocate();
        QVERIFY(a && b && *a != *b);
        QCOMPARE(m.available(), 2);
        const std::vector<int32_t> tokens(64, 7);
        const uint64_t h = BlockManager::chain_hash(0, tokens);
        QVERIFY(h != BlockManager::chain_hash(1, tokens));
        m.register_block(*a, h);
        // Registered blocks stay cached after release and come back by hash.
        m.release(*a);
        QCOMPARE(m.available(), 3);
        const auto hit = m.lookup(h);
        QCOMPARE(*hit, *a);
        QCOMPARE(m.refs(*a), 1);
        m.release(*a);
        m.release(*b);
        // When everything else is taken, the cached block is reused and its hash forgotten.
        std::vector<int32_t> taken;
        while (const auto x = m.allocate()) taken.push_back(*x);
        QCOMPARE(taken.size(), std::size_t(4));
        QVERIFY(!m.lookup(h));
        QVERIFY_THROWS_EXCEPTION(std::exception, [&] {
            for (int32_t x : taken) m.release(x);
            m.release(taken[0]);
        }());
    }
};

QTEST_APPLESS_MAIN(TestSampler)
#include "test_sampler.moc"
