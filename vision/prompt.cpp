#include "vision/prompt.h"

#include "engine/chat_template.h"
#include "engine/error.h"
#include "vision/preprocess.h"

namespace lumen::vision {

uint64_t content_hash(std::span<const uint8_t> bytes) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (uint8_t b : bytes) h = (h ^ b) * 0x100000001B3ull;
    return h;
}

PreparedImage prepare_image(std::span<const uint8_t> bytes, const VisionConfig& config, const DecodeLimits& limits) {
    return prepare_image(decode_image(bytes, limits), content_hash(bytes), config);
}

PreparedImage prepare_image(const RgbImage& image, uint64_t hash, const VisionConfig& config) {
    return {std::make_shared<const ImagePixels>(preprocess(image, config.preprocess)), hash};
}

PreparedPrompt expand_prompt(std::string_view text, std::span<const PreparedImage> images, const VisionConfig& config,
                             const Tokenizer& tokenizer, const EncodeOptions& options) {
    if (config.image_token_id < 0) throw Error("the model's image token is unknown");
    std::string expanded;
    std::vector<int64_t> counts;
    std::size_t at = 0, used = 0;
    while (true) {
        const std::size_t next = text.find(kImagePlaceholder, at);
        if (next == std::string_view::npos) break;
        if (used == images.size())
            throw Error("the prompt has more " + std::string(kImagePlaceholder) + " placeholders than images (" +
                        std::to_string(images.size()) + ")");
        expanded.append(text.substr(at, next - at));
        const int64_t n = int64_t(images[used].pixels->tiles) * config.tokens_per_tile;
        expanded += config.image_start;
        for (int64_t i = 0; i < n; ++i) expanded += config.image_token;
        expanded += config.image_end;
        counts.push_back(n);
        ++used;
        at = next + kImagePlaceholder.size();
    }
    if (used != images.size())
        throw Error("the prompt has " + std::to_string(used) + " image placeholders for " + std::to_string(images.size()) + " images");
    expanded.append(text.substr(at));

    PreparedPrompt out;
    out.ids = tokenizer.encode(expanded, options);
    // Each run of image tokens is one image, in order; text that spells the image token itself
    // would make a run of its own and is refused.
    for (std::size_t i = 0; i < out.ids.size();) {
        if (out.ids[i] != config.image_token_id) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (end < out.ids.size() && out.ids[end] == config.image_token_id) ++end;
        const std::size_t k = out.images.size();
        if (k >= images.size() || int64_t(end - i) != counts[k])
            throw Error("the prompt's text contains the image token " + config.image_token + " itself");
        out.images.push_back({images[k].pixels, images[k].content_hash, int32_t(i), int32_t(end - i)});
        i = end;
    }
    if (out.images.size() != images.size()) throw Error("the image tokens did not survive tokenization");
    return out;
}

}  // namespace lumen::vision
