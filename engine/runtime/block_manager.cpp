#include "engine/runtime/block_manager.h"

#include "engine/util/error.h"

namespace lumen {

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size)
    : block_size_(block_size), refs_(std::size_t(num_blocks), 0), evictable_at_(std::size_t(num_blocks)),
      in_evictable_(std::size_t(num_blocks), false), hash_of_(std::size_t(num_blocks)) {
    for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

std::optional<int32_t> BlockManager::allocate() {
    int32_t b;
    if (!free_.empty()) {
        b = free_.back();
        free_.pop_back();
    } else if (!evictable_.empty()) {
        b = evictable_.front();
        evictable_.pop_front();
        in_evictable_[std::size_t(b)] = false;
        forget(b);
    } else {
        return std::nullopt;
    }
    refs_[std::size_t(b)] = 1;
    return b;
}

void BlockManager::retain(int32_t block) {
    if (refs_[std::size_t(block)]++ == 0 && in_evictable_[std::size_t(block)]) {
        evictable_.erase(evictable_at_[std::size_t(block)]);
        in_evictable_[std::size_t(block)] = false;
    }
}

void BlockManager::release(int32_t block) {
    if (refs_[std::size_t(block)] <= 0) throw Error("KV block released more often than retained");
    if (--refs_[std::size_t(block)] > 0) return;
    if (hash_of_[std::size_t(block)]) {
        evictable_.push_back(block);
        evictable_at_[std::size_t(block)] = std::prev(evictable_.end());
        in_evictable_[std::size_t(block)] = true;
    } else {
        free_.push_back(block);
    }
}

uint64_t BlockManager::chain_hash(uint64_t previous, std::span<const int32_t> tokens, uint64_t salt) {
    // FNV-1a over the previous hash and the tokens, finished with a splitmix step.
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](uint64_t v) {
        for (int i = 0; i < 8; ++i) {
            h ^= (v >> (8 * i)) & 0xff;
            h *= 1099511628211ull;
        }
    };
    mix(previous);
    for (int32_t t : tokens) mix(uint64_t(uint32_t(t)));
    if (salt) mix(salt);
    h += 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

std::optional<int32_t> BlockManager::lookup(uint64_t hash) {
    const auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return std::nullopt;
    retain(it->second);
    return it->second;
}

void BlockManager::register_block(int32_t block, uint64_t hash) {
    if (hash_of_[std::size_t(block)] || by_hash_.count(hash)) return;
    hash_of_[std::size_t(block)] = hash;
    by_hash_[hash] = block;
}

void BlockManager::forget(int32_t block) {
    if (const auto h = hash_of_[std::size_t(block)]) {
        by_hash_.erase(*h);
        hash_of_[std::size_t(block)].reset();
    }
}

}  // namespace lumen
