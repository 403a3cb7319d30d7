#pragma once
// The vision side of a vision-language model folder, normalised: the ViT's shapes, the projector,
// the image tokens, and the preprocessing its reference processor does. Read from config.json,
// preprocessor_config.json, processor_config.json and the tokenizer, with the reference classes'
// defaults for what a file leaves out.
#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/model/model_config.h"

namespace lumen {
class Tokenizer;
}

namespace lumen::vision {

struct Preprocessing {
    enum class Mode {
        ShortestEdgeCrop,  // CLIPImageProcessor: shortest edge resized, then a center crop
        PadToSquare,       // LLaVA's "pad": a square of the mean colour, then resized
        Tiles,             // InternVL: a grid of square tiles chosen by aspect ratio, and a thumbnail
    };
    Mode mode = Mode::ShortestEdgeCrop;
    int size = 336;  // the square the encoder sees (crop size, tile size)
    int shortest_edge = 336;
    int min_tiles = 1, max_tiles = 12;
    bool thumbnail = true;
    std::array<float, 3> mean{}, std{};
    // The largest image preprocessing may make on the way (300 MB of RGB): a 50-megapixel photo
    // padded to a square fits; a 1x20000 strip resized to 336 pixels on its short side does not.
    int64_t max_working_pixels = 100'000'000;
};

struct VisionConfig {
    ModelKind kind = ModelKind::Llava;
    // The ViT.
    int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0;
    int64_t patch = 14, image_size = 336, channels = 3;  // image_size: the squares the tower is given
    // Patches per side the checkpoint's position embeddings were trained for, where the images
    // are another size (InternVL resamples them bicubically to the image's grid); 0 when equal.
    int64_t position_grid = 0;
    double eps = 1e-5;
    bool rms_norm = false;       // InternViT's norm_type "rms_norm"
    bool qkv_bias = true;
    bool qk_norm = false;        // InternViT-6B's q/k RMSNorm over all heads
    bool quick_gelu = false;     // CLIP's activation; GELU (erf) otherwise
    bool pre_norm = false;       // CLIP's pre_layrnorm after the embeddings
    bool layer_scale = false;    // InternViT's ls1/ls2
    // The hidden states the projector reads (1: after the first layer), side by side in this
    // order: vision_feature_layer (LLaVA's may be a list) or select_layer.
    std::vector<int64_t> feature_layers;
    // The projector.
    double downsample = 0.5;     // InternVL's pixel shuffle
    bool shuffle_v2 = true;      // ps_version "v2" (v1 leaves the tokens transposed)
    int64_t text_hidden = 0;
    // Image tokens in the prompt.
    int64_t tokens_per_tile = 0;
    int32_t image_token_id = -1;             // the placeholder whose embeddings are replaced
    std::string image_token;                 // its text
    std::string image_start, image_end;      // InternVL's <img> and </img>
    Preprocessing preprocess;

    int64_t patches_per_side() const { return image_size / patch; }
    // Layers the tower runs: up to the last hidden state the projector reads.
    int64_t layers_run() const { return feature_layers.empty() ? 0 : *std::max_element(feature_layers.begin(), feature_layers.end()); }
};

// Throws lumen::Error naming what is missing or unsupported. Without a tokenizer the image token
// ids stay unset (what the encoder alone needs does not depend on them).
VisionConfig load_vision_config(const std::filesystem::path& dir, const ModelConfig& config, const Tokenizer* tokenizer);

}  // namespace lumen::vision
