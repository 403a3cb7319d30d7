#pragma once
// Text with images into what the engine runs: each image decoded and preprocessed for the model,
// each "<image>" placeholder of the rendered chat prompt expanded into the family's image tokens
// (LLaVA: the image token once per patch; InternVL: <img>, <IMG_CONTEXT> per token and tile,
// </img>), tokenized as the reference tokenizes the expanded text, and the runs of image tokens
// tied to their images.
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "engine/runtime/image_input.h"
#include "engine/text/tokenizer.h"
#include "vision/image.h"
#include "vision/vision_config.h"

namespace lumen::vision {

struct PreparedImage {
    std::shared_ptr<const ImagePixels> pixels;
    uint64_t content_hash = 0;  // of the file's bytes: the same file is the same image
};

// Decodes an image file's bytes and preprocesses them for the model; throws lumen::Error.
PreparedImage prepare_image(std::span<const uint8_t> bytes, const VisionConfig& config, const DecodeLimits& limits = {});
// Preprocesses pixels already decoded (a screenshot); `content_hash` identifies them.
PreparedImage prepare_image(const RgbImage& image, uint64_t content_hash, const VisionConfig& config);

struct PreparedPrompt {
    std::vector<int32_t> ids;
    std::vector<PromptImage> images;
};

// `text` holds one kImagePlaceholder per image, in order.
PreparedPrompt expand_prompt(std::string_view text, std::span<const PreparedImage> images, const VisionConfig& config,
                             const Tokenizer& tokenizer, const EncodeOptions& options);

// A 64-bit hash of a file's bytes that identifies an image (for caches, never stored).
uint64_t content_hash(std::span<const uint8_t> bytes);

}  // namespace lumen::vision
