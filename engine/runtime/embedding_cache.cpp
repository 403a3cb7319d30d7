#include "engine/runtime/embedding_cache.h"

namespace lumen {

void EmbeddingCache::next_step() {
    ++step_;
    evict();
}

const Tensor& EmbeddingCache::embeddings_of(const PromptImage& image) {
    auto it = encoded_.find(image.content_hash);
    if (it == encoded_.end()) {
        const Tensor fresh = encoder_->encode(*image.pixels);
        // The encoder's output is scratch; the cache keeps a copy.
        Encoded e{backend_.activation(fresh.rows, fresh.cols, DType::F32), 0};
        backend_.copy(fresh, e.rows);
        it = encoded_.emplace(image.content_hash, std::move(e)).first;
    }
    it->second.last_step = step_;
    return it->second.rows.tensor();
}

void EmbeddingCache::encode_ahead(const PromptImage& image) {
    if (!encoder_ || !image.pixels) return;
    embeddings_of(image);
    evict();
}

void EmbeddingCache::evict() {
    constexpr std::size_t kKeep = 4;
    while (encoded_.size() > kKeep) {
        auto oldest = encoded_.begin();
        for (auto it = encoded_.begin(); it != encoded_.end(); ++it)
            if (it->second.last_step < oldest->second.last_step) oldest = it;
        encoded_.erase(oldest);
    }
}

}  // namespace lumen
