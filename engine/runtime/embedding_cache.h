#pragma once
// Image embeddings on the backend, kept while an image is likely to be asked about again: a
// follow-up usually asks about the same image, and preempted sequences come back to theirs.
#include <cstdint>
#include <unordered_map>

#include "engine/backend/backend.h"
#include "engine/runtime/image_input.h"

namespace lumen {

class EmbeddingCache {
public:
    // `encoder` may be null (a text-only model): then nothing is ever encoded.
    EmbeddingCache(Backend& backend, ImageEncoder* encoder) : backend_(backend), encoder_(encoder) {}
    EmbeddingCache(const EmbeddingCache&) = delete;
    EmbeddingCache& operator=(const EmbeddingCache&) = delete;

    // A new scheduler step: the least recently used embeddings beyond the few kept are released.
    void next_step();
    // The embeddings of `image`, encoding it if they are not cached; valid until the next step.
    const Tensor& embeddings_of(const PromptImage& image);
    // Encodes an image before any request needs it and keeps its embeddings with the recent ones.
    void encode_ahead(const PromptImage& image);

    std::size_t size() const { return encoded_.size(); }

private:
    struct Encoded {
        Buffer rows;
        uint64_t last_step = 0;
    };

    void evict();

    Backend& backend_;
    ImageEncoder* encoder_;
    std::unordered_map<uint64_t, Encoded> encoded_;  // by content hash
    uint64_t step_ = 0;
};

}  // namespace lumen
