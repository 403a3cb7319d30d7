#include "vision/prompt.h"

#include <bit>
#include <cstring>

#include "engine/text/chat_template.h"
#include "engine/util/error.h"
#include "vision/preprocess.h"

namespace lumen::vision {

namespace {

// A 64-bit finaliser that spreads every input bit over the whole word (splitmix64's).
uint64_t mix(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

}  // namespace

uint64_t content_hash(std::span<const uint8_t> bytes) {
    // Four independent lanes of 8-byte words (a multiply and a rotation each), so that a phone
    // photo of several megabytes hashes in a fraction of a millisecond; then the tail and length.
    constexpr uint64_t kOdd = 0x9E3779B97F4A7C15ull;
    uint64_t lanes[4] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull, 0xA4093822299F31D0ull, 0x082EFA98EC4E6C89ull};
    const std::size_t n = bytes.size(), whole = n / 32 * 32;
    for (std::size_t at = 0; at < whole; at += 32)
        for (int k = 0; k < 4; ++k) {
            uint64_t w;
            std::memcpy(&w, bytes.data() + at + 8 * std::size_t(k), 8);
            lanes[k] = std::rotl((lanes[k] ^ w) * kOdd, 29);
        }
    uint64_t h = mix(n);
    for (uint64_t lane : lanes) h = mix(h ^ mix(lane));
    for (std::size_t at = whole; at < n; ++at) h = (h ^ bytes[at]) * kOdd;
    return mix(h);
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
