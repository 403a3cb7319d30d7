// The sequence manager on its own, over a small pool of 4-token blocks: sessions keep their blocks
// for the next turn, sequences with a common prefix share its full blocks, and every block goes
// back to the pool once sequences retire and sessions close. Also the reply's stop strings.
#include <QtTest>
#include <numeric>

#include "engine/backend/backend.h"
#include "engine/runtime/sequence_manager.h"
#include "engine/runtime/stop_strings.h"

using namespace lumen;

namespace {

constexpr int32_t kBlockSize = 4;
constexpr int32_t kBlocks = 16;

KvSequence sequence(std::vector<int32_t> prompt, std::optional<uint64_t> session = {}) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.session = session;
    return KvSequence(std::move(r));
}

std::vector<int32_t> iota_tokens(int32_t count, int32_t first = 10) {
    std::vector<int32_t> t(static_cast<std::size_t>(count));
    std::iota(t.begin(), t.end(), first);
    return t;
}

// What a step does for a sequence that feeds all its tokens but the last (sampled, not yet computed).
void compute(SequenceManager& m, KvSequence& s) {
    QVERIFY(m.ensure_blocks(s, s.tokens.size()));
    s.computed = s.tokens.size() - 1;
    m.register_full_blocks(s);
}

// Blocks referenced by someone (a sequence or a session).
int32_t in_use(const SequenceManager& m) { return m.blocks().num_blocks() - m.blocks().available(); }

}  // namespace

class TestSequenceManager : public QObject {
    Q_OBJECT
private:
    std::unique_ptr<Backend> backend_;

private slots:
    void initTestCase() {
        backend_ = make_cpu_backend();
        backend_->allocate_kv_cache({1, 1, 4, kBlockSize, kBlocks, DType::F32});
    }

    void sessionReusesItsBlocksForTheNextTurn() {
        SequenceManager m(*backend_, kBlocks, kBlockSize);
        KvSequence turn1 = sequence(iota_tokens(10), 7);
        m.begin(turn1);
        QVERIFY(m.busy(7));
        QVERIFY(m.admit(turn1));
        compute(m, turn1);  // 9 tokens computed: blocks 0 and 1 full, block 2 partly
        const std::vector<int32_t> kept = turn1.blocks;
        m.retire(turn1, true);
        QVERIFY(!m.busy(7));
        QCOMPARE(m.idle_sessions(), std::size_t(1));
        QCOMPARE(in_use(m), 3);
        QVERIFY(turn1.blocks.empty());

        // The follow-up starts with all of turn 1: its blocks are taken over, nothing is computed again.
        std::vector<int32_t> prompt = iota_tokens(10);
        for (int32_t t : iota_tokens(5, 100)) prompt.push_back(t);
        KvSequence turn2 = sequence(prompt, 7);
        m.begin(turn2);
        QVERIFY(m.admit(turn2));
        QCOMPARE(turn2.computed, std::size_t(9));
        QCOMPARE(turn2.reused_tokens, 9);
        QCOMPARE(turn2.blocks, kept);
        QCOMPARE(m.idle_sessions(), std::size_t(0));  // the blocks are the sequence's now
        for (int32_t b : kept) QCOMPARE(m.blocks().refs(b), 1);
        QCOMPARE(in_use(m), 3);

        m.retire(turn2, false);
        QCOMPARE(m.idle_sessions(), std::size_t(0));
        QCOMPARE(m.blocks().available(), kBlocks);
        for (int32_t b : kept) QCOMPARE(m.blocks().refs(b), 0);
    }

    void turnDivergingInsideASharedBlockCopiesIt() {
        SequenceManager m(*backend_, kBlocks, kBlockSize);
        KvSequence turn1 = sequence(iota_tokens(12), 3);
        m.begin(turn1);
        QVERIFY(m.admit(turn1));
        compute(m, turn1);  // 11 computed: blocks 0 and 1 full and registered
        const std::vector<int32_t> kept = turn1.blocks;
        m.retire(turn1, true);

        // Equal for 6 tokens: block 0 is taken, block 1 (registered, others may read it) is copied.
        std::vector<int32_t> prompt = iota_tokens(6);
        for (int32_t t : iota_tokens(4, 200)) prompt.push_back(t);
        KvSequence turn2 = sequence(prompt, 3);
        m.begin(turn2);
        QVERIFY(m.admit(turn2));
        QCOMPARE(turn2.computed, std::size_t(6));
        QCOMPARE(turn2.blocks.size(), std::size_t(2));
        QCOMPARE(turn2.blocks[0], kept[0]);
        QVERIFY(turn2.blocks[1] != kept[1]);
        // The session's other blocks went back, the registered one stays cached for others.
        QCOMPARE(m.blocks().refs(kept[1]), 0);
        QVERIFY(m.blocks().is_registered(kept[1]));
        m.retire(turn2, false);
        QCOMPARE(m.blocks().available(), kBlocks);
    }

    void sharedPrefixIsCountedOnce() {
        SequenceManager m(*backend_, kBlocks, kBlockSize);
        std::vector<int32_t> a = iota_tokens(8), b = iota_tokens(8);
        for (int32_t t : iota_tokens(3, 300)) a.push_back(t);
        for (int32_t t : iota_tokens(5, 400)) b.push_back(t);
        KvSequence first = sequence(a);
        m.begin(first);
        QVERIFY(m.admit(first));
        compute(m, first);
        QCOMPARE(in_use(m), 3);

        KvSequence second = sequence(b);
        m.begin(second);
        QVERIFY(m.admit(second));
        QCOMPARE(second.computed, std::size_t(8));
        QCOMPARE(second.reused_tokens, 8);
        QCOMPARE(second.blocks, std::vector<int32_t>(first.blocks.begin(), first.blocks.begin() + 2));
        QCOMPARE(m.blocks().refs(first.blocks[0]), 2);
        compute(m, second);
        // Two shared blocks, one of the first's own, two of the second's own.
        QCOMPARE(in_use(m), 5);

        m.retire(first, false);
        m.retire(second, false);
        QCOMPARE(m.blocks().available(), kBlocks);
        // Unreferenced, the prefix stays cached for a later sequence.
        KvSequence third = sequence(b);
        QVERIFY(m.admit(third));
        QCOMPARE(third.computed, std::size_t(12));
        m.retire(third, false);
        QCOMPARE(m.blocks().available(), kBlocks);
    }

    void idleSessionsMakeRoom() {
        SequenceManager m(*backend_, kBlocks, kBlockSize);
        KvSequence a = sequence(iota_tokens(40), 1);  // 10 blocks kept
        m.begin(a);
        QVERIFY(m.admit(a));
        compute(m, a);
        m.retire(a, true);
        QCOMPARE(in_use(m), 10);

        // Another session's long prompt needs 8 blocks: session 1 is closed for it.
        KvSequence b = sequence(iota_tokens(30, 500), 2);
        m.begin(b);
        QVERIFY(m.admit(b));
        QCOMPARE(m.idle_sessions(), std::size_t(0));
        compute(m, b);
        m.retire(b, true);
        QCOMPARE(m.idle_sessions(), std::size_t(1));
        QCOMPARE(in_use(m), 8);
        m.close_session(2);
        QCOMPARE(m.blocks().available(), kBlocks);
    }

    // The path the scheduler once released twice: a sequence that took cached blocks (here its
    // session's, which the session still holds too) but cannot be admitted. It must give back
    // exactly its own references, once: a second release would take the session's reference (or
    // throw "released more often than retained"), and closing the session would then fail.
    void failedAdmissionReleasesOnlyWhatItTook() {
        SequenceManager m(*backend_, kBlocks, kBlockSize);
        KvSequence turn1 = sequence(iota_tokens(20), 9);
        m.begin(turn1);
        QVERIFY(m.admit(turn1));
        compute(m, turn1);
        const std::vector<int32_t> kept = turn1.blocks;
        m.retire(turn1, true);
        QCOMPARE(in_use(m), 5);

        // Turn 1 and then more than the pool holds.
        std::vector<int32_t> prompt = iota_tokens(20);
        for (int32_t t : iota_tokens(60, 600)) prompt.push_back(t);
        KvSequence turn2 = sequence(prompt, 9);
        m.begin(turn2);
        QVERIFY(!m.admit(turn2));
        QVERIFY(turn2.blocks.empty());
        QCOMPARE(turn2.computed, std::size_t(0));
        QVERIFY(!turn2.attached);
        QCOMPARE(m.idle_sessions(), std::size_t(1));
        for (int32_t b : kept) QCOMPARE(m.blocks().refs(b), 1);

        // The scheduler ends it with an error: nothing is left to release, nothing kept.
        m.retire(turn2, false);
        QVERIFY(!m.busy(9));
        for (int32_t b : kept) QCOMPARE(m.blocks().refs(b), 1);
        m.close_session(9);
        QCOMPARE(m.blocks().available(), kBlocks);
        for (int32_t b = 0; b < kBlocks; ++b) QCOMPARE(m.blocks().refs(b), 0);
    }

    void releaseGivesBackEveryBlockOnce() {
        SequenceManager m(*backend_, kBlocks, kBlockSize);
        KvSequence s = sequence(iota_tokens(9));
        QVERIFY(m.admit(s));
        compute(m, s);
        m.release(s);
        QVERIFY(s.blocks.empty() && s.hashes.empty());
        QCOMPARE(s.computed, std::size_t(0));
        m.release(s);  // a preempted sequence that then finishes releases again: nothing happens
        QCOMPARE(m.blocks().available(), kBlocks);
    }

    void stopStringsHoldBackTheirStartAndCutTheReply() {
        StopStrings reply({"User:", "\n\n"});
        QCOMPARE(reply.push("Hello "), std::string("Hello "));
        QCOMPARE(reply.push("Us"), std::string());  // may be "User:"
        QVERIFY(reply.holding_back());
        QCOMPARE(reply.push("ually"), std::string("Usually"));
        QCOMPARE(reply.push(" fine\n"), std::string(" fine"));  // may be "\n\n"
        QVERIFY(!reply.stopped());
        QCOMPARE(reply.push("\nUser: hi"), std::string());
        QVERIFY(reply.stopped());
        QVERIFY(!reply.holding_back());
        QCOMPARE(reply.flush(""), std::string());

        StopStrings none({});
        QCOMPARE(none.push("abc"), std::string("abc"));
        QCOMPARE(none.flush("d"), std::string("d"));
        // A stop string split over many pieces is still found.
        StopStrings split({"abc"});
        QCOMPARE(split.push("xa"), std::string("x"));
        QCOMPARE(split.push("b"), std::string());
        QCOMPARE(split.push("cz"), std::string());
        QVERIFY(split.stopped());
    }
};

QTEST_GUILESS_MAIN(TestSequenceManager)
#include "test_sequence_manager.moc"
