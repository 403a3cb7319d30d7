#pragma once
// Images in a prompt, as the engine sees them: pixels already preprocessed for the model's vision
// encoder, the prompt tokens whose embeddings they replace, and the encoder interface the vision
// module implements. The engine runs the encoder on its own thread, only when a prompt chunk
// needs the image's rows (an image whose keys and values are cached is never encoded again).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/model/model_config.h"
#include "engine/util/uninitialized.h"

namespace lumen {

// The pixels of one image as the reference processor has them before it rescales and normalises:
// `tiles` planes of channels × height × width (NCHW) of 8-bit samples. The encoder normalises them
// where it runs (a quarter of the bytes to keep and to copy to a GPU).
struct ImagePixels {
    int32_t tiles = 0;
    int32_t channels = 3;
    int32_t height = 0;
    int32_t width = 0;
    std::vector<uint8_t, UninitializedAllocator<uint8_t>> values;  // unset until written
};

struct PromptImage {
    std::shared_ptr<const ImagePixels> pixels;
    uint64_t content_hash = 0;  // identifies the image for cache reuse (hash of its file bytes)
    int32_t first = 0;          // prompt index of the first placeholder token
    int32_t count = 0;          // placeholder tokens, one per embedding row
};

class ImageEncoder {
public:
    virtual ~ImageEncoder() = default;
    // Embedding rows an image of these pixels becomes.
    virtual int64_t tokens_for(const ImagePixels& pixels) const = 0;
    // The embeddings, [tokens_for(pixels), hidden size] F32 on the backend, valid until the next call.
    virtual Tensor encode(const ImagePixels& pixels) = 0;
    // Bytes of the encoder's weights as stored.
    virtual uint64_t weight_bytes() const = 0;
};

// Made once the language model is loaded, on the same backend; for text-only models it is not
// called. The vision module provides one (vision::make_image_encoder).
using ImageEncoderFactory =
    std::function<std::unique_ptr<ImageEncoder>(const std::filesystem::path& model_dir, const ModelConfig& config, Backend& backend)>;

}  // namespace lumen
