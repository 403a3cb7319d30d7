#include "engine/runtime/sequence_manager.h"

#include <algorithm>

namespace lumen {

namespace {

// Whether two images put the same pixels at the same prompt positions.
bool same_image(const PromptImage& a, const PromptImage& b) {
    return a.first == b.first && a.count == b.count && a.content_hash == b.content_hash;
}

}  // namespace

SequenceManager::SequenceManager(Backend& backend, int32_t num_blocks, int32_t block_size)
    : backend_(backend), blocks_(num_blocks, block_size) {}

std::size_t SequenceManager::blocks_for(std::size_t positions) const {
    const std::size_t bs = std::size_t(blocks_.block_size());
    return (positions + bs - 1) / bs;
}

void SequenceManager::begin(const KvSequence& s) {
    if (s.request.session) busy_sessions_.insert(*s.request.session);
}

void SequenceManager::close_session(uint64_t session) {
    const auto it = sessions_.find(session);
    if (it == sessions_.end()) return;
    for (int32_t b : it->second.blocks) blocks_.release(b);
    sessions_.erase(it);
}

bool SequenceManager::close_idle_session(const KvSequence& keep) {
    for (const auto& [id, session] : sessions_)
        if (!(keep.request.session && *keep.request.session == id)) {
            close_session(id);
            return true;
        }
    return false;
}

uint64_t SequenceManager::block_hash(const KvSequence& s, std::size_t block, uint64_t previous) const {
    const std::size_t bs = std::size_t(blocks_.block_size());
    const std::size_t begin = block * bs, end = begin + bs;
    // Placeholder tokens look alike whatever the image: the images under the block go into its hash.
    uint64_t salt = 0;
    for (const PromptImage& im : s.request.images)
        if (std::size_t(im.first) < end && std::size_t(im.first + im.count) > begin)
            salt = salt * 0x9E3779B97F4A7C15ull + (im.content_hash ^ (uint64_t(uint32_t(im.first)) << 32 | uint32_t(im.count)));
    return BlockManager::chain_hash(previous, std::span(s.tokens).subspan(begin, bs), salt);
}

void SequenceManager::attach_session(KvSequence& s, const Session& old) {
    const std::size_t bs = std::size_t(blocks_.block_size());
    const std::size_t limit = s.tokens.size() - 1;  // the last token is always computed, for its logits
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
    const std::size_t full = lcp / bs;
    for (std::size_t i = 0; i < full; ++i) {
        blocks_.retain(old.blocks[i]);
        s.blocks.push_back(old.blocks[i]);
    }
    if (lcp % bs != 0) {
        const int32_t b = old.blocks[full];
        if (blocks_.refs(b) > 1 || blocks_.is_registered(b)) {
            // Shared: the new tokens must not overwrite what others read, so copy it.
            if (const auto copy = blocks_.allocate()) {
                backend_.copy_kv_block(b, *copy);
                s.blocks.push_back(*copy);
            } else {
                lcp = full * bs;
            }
        } else {
            blocks_.retain(b);
            s.blocks.push_back(b);
        }
    }
    s.computed = lcp;
    s.reused_tokens = int32_t(lcp);
}

void SequenceManager::attach_cached_prefix(KvSequence& s) {
    if (s.request.session)
        if (const auto it = sessions_.find(*s.request.session); it != sessions_.end()) {
            attach_session(s, it->second);
            return;
        }
    const std::size_t bs = std::size_t(blocks_.block_size());
    const std::size_t limit = s.tokens.size() - 1;  // the last token is always computed, for its logits
    uint64_t previous = 0;
    for (std::size_t i = 0; (i + 1) * bs <= limit; ++i) {
        const uint64_t h = block_hash(s, i, previous);
        const auto b = blocks_.lookup(h);
        if (!b) break;
        s.blocks.push_back(*b);
        s.hashes.push_back(h);
        previous = h;
    }
    s.computed = s.blocks.size() * bs;
    // After a preemption the sequence finds its own blocks again: reuse counts what the first admission found.
    if (s.reused_tokens == 0) s.reused_tokens = int32_t(s.computed);
}

bool SequenceManager::admit(KvSequence& s) {
    if (!s.attached) {
        attach_cached_prefix(s);
        s.attached = true;
    }
    const std::size_t total = blocks_for(s.tokens.size() + 1);  // room for the next token too
    const std::size_t need = total > s.blocks.size() ? total - s.blocks.size() : 0;
    while (std::size_t(blocks_.available()) < need && close_idle_session(s)) {
    }
    if (std::size_t(blocks_.available()) < need) {
        // Not now: give back what the lookup took, so waiting never holds blocks.
        release(s);
        return false;
    }
    if (s.request.session) close_session(*s.request.session);  // its blocks now belong to s
    return true;
}

bool SequenceManager::ensure_blocks(KvSequence& s, std::size_t positions) {
    const std::size_t needed = blocks_for(positions);
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

void SequenceManager::register_full_blocks(KvSequence& s) {
    const std::size_t bs = std::size_t(blocks_.block_size());
    while ((s.hashes.size() + 1) * bs <= s.computed) {
        const std::size_t i = s.hashes.size();
        const uint64_t h = block_hash(s, i, i ? s.hashes[i - 1] : 0);
        s.hashes.push_back(h);
        blocks_.register_block(s.blocks[i], h);
    }
}

void SequenceManager::release(KvSequence& s) {
    for (int32_t b : s.blocks) blocks_.release(b);
    s.blocks.clear();
    s.hashes.clear();
    s.computed = 0;
    s.attached = false;
}

void SequenceManager::retire(KvSequence& s, bool keep_session) {
    if (s.request.session) {
        const uint64_t session = *s.request.session;
        busy_sessions_.erase(session);
        if (keep_session && s.computed > 0) {
            // Keep the blocks of what was computed for the next turn.
            const std::size_t keep = blocks_for(s.computed);
            for (std::size_t i = keep; i < s.blocks.size(); ++i) blocks_.release(s.blocks[i]);
            s.blocks.resize(std::min(keep, s.blocks.size()));
            std::vector<PromptImage> images;
            for (const PromptImage& im : s.request.images)
                if (std::size_t(im.first) < s.computed) images.push_back({nullptr, im.content_hash, im.first, im.count});
            // Admission took the session's earlier blocks; should any remain, they must not leak.
            close_session(session);
            sessions_[session] = Session{std::vector<int32_t>(s.tokens.begin(), s.tokens.begin() + std::ptrdiff_t(s.computed)),
                                         std::move(s.blocks), std::move(images)};
            s.blocks.clear();
        }
    }
    release(s);
}

}  // namespace lumen
