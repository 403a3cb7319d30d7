#pragma once
// Hands out the fixed-size blocks of the paged KV cache. Blocks are reference counted; a full
// block is registered under the hash of every token up to its end, so a later sequence with the
// same prefix (a system prompt, an earlier turn) shares it instead of computing it again.
// Unreferenced registered blocks stay cached until a new block is needed (least recently freed first).
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace lumen {

class BlockManager {
public:
    BlockManager(int32_t num_blocks, int32_t block_size);

    int32_t block_size() const { return block_size_; }
    int32_t num_blocks() const { return int32_t(refs_.size()); }
    // Blocks that can be handed out now (free, or cached and unreferenced).
    int32_t available() const { return int32_t(free_.size() + evictable_.size()); }

    // A block for new tokens, or nullopt when every block is in use.
    std::optional<int32_t> allocate();
    void retain(int32_t block);
    void release(int32_t block);
    int32_t refs(int32_t block) const { return refs_[std::size_t(block)]; }

    // The chained hash of a full block: the previous block's hash and this block's tokens, and a
    // salt for what the tokens alone do not say (the images behind image placeholder tokens).
    static uint64_t chain_hash(uint64_t previous, std::span<const int32_t> tokens, uint64_t salt = 0);
    // A cached block with this hash, retained for the caller.
    std::optional<int32_t> lookup(uint64_t hash);
    // Registers a full block's hash (a block registers once; an existing entry wins).
    void register_block(int32_t block, uint64_t hash);
    bool is_registered(int32_t block) const { return hash_of_[std::size_t(block)].has_value(); }

private:
    void forget(int32_t block);

    int32_t block_size_;
    std::vector<int32_t> refs_;
    std::vector<int32_t> free_;                       // unreferenced, unregistered
    std::list<int32_t> evictable_;                    // unreferenced but registered, oldest first
    std::vector<std::list<int32_t>::iterator> evictable_at_;
    std::vector<bool> in_evictable_;
    std::vector<std::optional<uint64_t>> hash_of_;
    std::unordered_map<uint64_t, int32_t> by_hash_;
};

}  // namespace lumen
