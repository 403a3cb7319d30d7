#pragma once
// The KV blocks of sequences, on top of the BlockManager: which blocks hold a sequence's tokens,
// the blocks a session keeps between its turns, and the full blocks sequences with the same prefix
// share by hash. Single-threaded (the engine thread); scheduling decisions such as preemption are
// the scheduler's.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/runtime/block_manager.h"
#include "engine/runtime/engine.h"

namespace lumen {

// A sequence as far as its KV cache goes: what was asked (tokens, images, session) and which
// blocks hold the keys and values of its first `computed` tokens.
struct KvSequence {
    explicit KvSequence(GenerationRequest r) : request(std::move(r)), tokens(request.prompt) {}

    GenerationRequest request;
    std::vector<int32_t> tokens;   // prompt, then generated tokens
    std::size_t computed = 0;      // tokens whose keys and values are in the cache
    std::vector<int32_t> blocks;   // block table
    std::vector<uint64_t> hashes;  // chain hashes of the full blocks seen so far
    bool attached = false;         // cached prefix looked up
    int32_t reused_tokens = 0;     // prompt tokens whose KV came from the cache at the first admission
};

class SequenceManager {
public:
    // `backend` holds the KV cache of `num_blocks` blocks (a shared block is copied there).
    SequenceManager(Backend& backend, int32_t num_blocks, int32_t block_size);

    const BlockManager& blocks() const { return blocks_; }
    int32_t block_size() const { return blocks_.block_size(); }
    // Blocks that hold `positions` tokens.
    std::size_t blocks_for(std::size_t positions) const;

    // A session generates one reply at a time: it is busy from begin() to retire().
    bool busy(uint64_t session) const { return busy_sessions_.count(session) != 0; }
    void begin(const KvSequence& s);
    // Frees the blocks a session kept from its last turn (none while it is generating).
    void close_session(uint64_t session);
    std::size_t idle_sessions() const { return sessions_.size(); }

    // Attaches the cached prefix (once until released) and makes room for the rest of the
    // sequence and its next token, closing other idle sessions if needed; the sequence then owns
    // its session's blocks. False when the pool cannot hold it now: it then holds no blocks.
    bool admit(KvSequence& s);
    // Blocks for the first `positions` tokens, closing idle sessions other than the sequence's
    // own when the pool is empty; false when even that does not give enough.
    bool ensure_blocks(KvSequence& s, std::size_t positions);
    // Registers the blocks that the computed tokens have filled, for other sequences to share.
    void register_full_blocks(KvSequence& s);
    // Gives every block back; the sequence starts over from its first token when admitted again.
    void release(KvSequence& s);
    // The sequence has ended: its session (if any) is no longer busy and, when `keep_session`,
    // keeps the blocks of what was computed for its next turn; every other block goes back.
    void retire(KvSequence& s, bool keep_session);

private:
    struct Session {
        std::vector<int32_t> tokens;  // tokens whose KV the blocks hold
        std::vector<int32_t> blocks;
        std::vector<PromptImage> images;  // the images among those tokens (without pixels)
    };

    void attach_cached_prefix(KvSequence& s);
    // Takes the blocks of the session's last turn that `s` starts with.
    void attach_session(KvSequence& s, const Session& old);
    uint64_t block_hash(const KvSequence& s, std::size_t block, uint64_t previous) const;
    // Frees the blocks of one idle session other than `keep`'s; false when there is none.
    bool close_idle_session(const KvSequence& keep);

    Backend& backend_;
    BlockManager blocks_;
    std::unordered_map<uint64_t, Session> sessions_;  // idle sessions and the blocks they keep
    std::unordered_set<uint64_t> busy_sessions_;
};

}  // namespace lumen
