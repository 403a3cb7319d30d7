#include "vision/vision_config.h"

#include <cmath>

#include "engine/util/error.h"
#include "engine/util/json_file.h"
#include "engine/text/tokenizer.h"
#include "engine/text/tokenizer_files.h"

namespace lumen::vision {
namespace {

using nlohmann::json;

json read_json(const std::filesystem::path& path) { return read_json_file(path, kConfigFile).value_or(json::object()); }

// An int, or the first element of a [h, w] pair (square images only).
int64_t square_of(const json& j, const std::string& field, int64_t fallback) {
    const auto it = j.find(field);
    if (it == j.end() || it->is_null()) return fallback;
    if (it->is_number_integer()) return it->get<int64_t>();
    if (it->is_array() && it->size() == 2 && (*it)[0] == (*it)[1]) return (*it)[0].get<int64_t>();
    throw Error("config.json: vision " + field + " " + it->dump() + " is not a square size");
}

// Far above real models (CLIP ViT-L/336: 1024 wide, 24 layers; InternViT-6B: 3200 wide, 48
// layers, 25 heads; at most 40 tiles), low enough that no size computed from them overflows.
constexpr int64_t kMaxVitWidth = 1 << 16;
constexpr int64_t kMaxVitLayers = 1024;
constexpr int64_t kMaxSide = 4096;  // the squares the tower sees, and shortest_edge
constexpr int64_t kMaxTiles = 128;

// InternVL's pixel shuffle: only 0.5 (every InternVL2 and 2.5 model) is supported, checked before
// any token count is computed from it.
double downsample_ratio(const json& raw) {
    const auto it = raw.find("downsample_ratio");
    if (it == raw.end() || it->is_null()) return 0.5;
    if (!it->is_number() || it->get<double>() != 0.5)
        throw Error("config.json: downsample_ratio " + it->dump() + " is not supported (0.5)");
    return 0.5;
}

// An integer field in [lo, hi], or `fallback` when absent.
int64_t integer(const json& j, const char* key, int64_t fallback, int64_t lo, int64_t hi, const char* file) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi)
        throw Error(std::string(file) + ": '" + key + "' must be an integer from " + std::to_string(lo) + " to " +
                    std::to_string(hi) + " (got " + it->dump() + ")");
    return it->get<int64_t>();
}

// image_mean or image_std: three finite numbers (the deviations above zero, as they divide).
std::array<float, 3> triple(const json& j, const char* field, std::array<float, 3> fallback) {
    const auto it = j.find(field);
    if (it == j.end() || it->is_null()) return fallback;
    const bool divisor = std::string_view(field) == "image_std";
    bool ok = it->is_array() && it->size() == 3;
    for (std::size_t c = 0; ok && c < 3; ++c)
        ok = (*it)[c].is_number() && std::isfinite((*it)[c].get<double>()) && std::fabs((*it)[c].get<double>()) < 1e6 &&
             (!divisor || (*it)[c].get<double>() > 1e-6);
    if (!ok)
        throw Error("preprocessor_config.json: '" + std::string(field) + "' must be three " +
                    (divisor ? "positive numbers" : "numbers") + " (got " + it->dump() + ")");
    return {(*it)[0].get<float>(), (*it)[1].get<float>(), (*it)[2].get<float>()};
}

// preprocessor_config.json sizes: {"shortest_edge": n}, {"height": h, "width": w}, or a number.
int64_t size_field(const json& j, const char* field, const char* key, int64_t fallback) {
    constexpr const char* kFile = "preprocessor_config.json";
    const auto it = j.find(field);
    if (it == j.end() || it->is_null()) return fallback;
    if (it->is_number_integer()) return integer(j, field, fallback, 1, kMaxSide, kFile);
    if (it->is_object()) {
        if (it->contains(key)) return integer(*it, key, fallback, 1, kMaxSide, kFile);
        if (it->contains("height") && it->contains("width")) {
            if ((*it)["height"] != (*it)["width"]) throw Error("preprocessor_config.json: only square " + std::string(field) + " is supported");
            return integer(*it, "height", fallback, 1, kMaxSide, kFile);
        }
    }
    throw Error(std::string("preprocessor_config.json: cannot read ") + field);
}

void check_bicubic(const json& pre) {
    if (pre.contains("resample") && pre["resample"] != 3)
        throw Error("preprocessor_config.json: resample " + pre["resample"].dump() + " is not supported (Lumen resizes with bicubic, 3)");
}

int32_t token_id_of(const Tokenizer* tokenizer, const std::string& token) {
    if (!tokenizer) return -1;
    const auto id = tokenizer->token_id(token);
    if (!id) throw Error("the tokenizer has no " + token + " token, which this model's image prompts need");
    return *id;
}

constexpr std::array<float, 3> kClipMean{0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> kClipStd{0.26862954f, 0.26130258f, 0.27577711f};
constexpr std::array<float, 3> kImagenetMean{0.485f, 0.456f, 0.406f};
constexpr std::array<float, 3> kImagenetStd{0.229f, 0.224f, 0.225f};

// The layers to run so that the selected hidden state is the last output: hidden state i is the
// output of layer i - 1 (state 0 is the embeddings), and negative indices count from the end.
int64_t layers_for(int64_t feature_layer, int64_t layers) {
    const int64_t index = feature_layer < 0 ? layers + 1 + feature_layer : feature_layer;
    if (index < 1 || index > layers)
        throw Error("config.json: vision feature layer " + std::to_string(feature_layer) + " is outside the " +
                    std::to_string(layers) + " layers");
    return index;
}

// Adds a hidden state the projector reads.
void use_feature_layer(VisionConfig& v, int64_t feature_layer) { v.feature_layers.push_back(layers_for(feature_layer, v.layers)); }

// InternVL images of another size than the tower's config names: the tower takes them, its
// position embeddings resampled to their grid (as transformers does on every forward).
void resize_tower_input(VisionConfig& v, int64_t size, const char* what) {
    if (size == v.image_size) return;
    if (size <= 0 || size % v.patch != 0 || (size / v.patch) % 2 != 0)
        throw Error(std::string(what) + " " + std::to_string(size) + " is not an even number of " + std::to_string(v.patch) +
                    "-pixel patches");
    if (v.image_size % v.patch != 0) throw Error("config.json: the vision tower's image size is not a whole number of patches");
    v.position_grid = v.image_size / v.patch;
    v.image_size = size;
}

// The ViT's sizes from a vision_config, with the family's defaults for what it leaves out.
struct VitDefaults {
    int64_t hidden, intermediate, layers, heads;
    double eps;
};
void read_vit_sizes(VisionConfig& v, const json& vc, const VitDefaults& d) {
    constexpr const char* kFile = "config.json: vision_config";
    v.hidden = integer(vc, "hidden_size", d.hidden, 1, kMaxVitWidth, kFile);
    v.intermediate = integer(vc, "intermediate_size", d.intermediate, 1, kMaxVitWidth, kFile);
    v.layers = integer(vc, "num_hidden_layers", d.layers, 1, kMaxVitLayers, kFile);
    v.heads = integer(vc, "num_attention_heads", d.heads, 1, kMaxVitWidth, kFile);
    v.channels = integer(vc, "num_channels", 3, 3, 3, kFile);
    v.eps = vc.value("layer_norm_eps", d.eps);
    if (!(v.eps > 0 && v.eps < 1)) throw Error("config.json: vision_config: 'layer_norm_eps' must be between 0 and 1");
}

void load_llava(VisionConfig& v, const json& raw, const std::filesystem::path& dir, const Tokenizer* tokenizer) {
    // Without a vision_config, LlavaConfig means CLIP ViT-L/14 at 336 pixels.
    const json vc = raw.value("vision_config", json{{"hidden_size", 1024}, {"intermediate_size", 4096}, {"num_hidden_layers", 24},
                                                   {"num_attention_heads", 16}, {"patch_size", 14}, {"image_size", 336}});
    read_vit_sizes(v, vc, {768, 3072, 12, 12, 1e-5});  // CLIPVisionConfig's defaults
    v.patch = integer(vc, "patch_size", 32, 1, kMaxSide, "config.json: vision_config");
    v.image_size = integer(vc, "image_size", 224, 1, kMaxSide, "config.json: vision_config");
    const std::string act = vc.value("hidden_act", "quick_gelu");
    if (act != "quick_gelu" && act != "gelu") throw Error("config.json: vision hidden_act '" + act + "' is not supported");
    v.quick_gelu = act == "quick_gelu";
    v.pre_norm = true;
    v.qkv_bias = true;
    // One layer, or a list whose hidden states are concatenated (the projector's input grows with it).
    const json& layer = raw.contains("vision_feature_layer") ? raw["vision_feature_layer"] : json(-2);
    for (const json& l : layer.is_array() ? layer : json::array({layer})) {
        if (!l.is_number_integer()) throw Error("config.json: vision_feature_layer must be an integer or a list of integers");
        use_feature_layer(v, l.get<int64_t>());
    }
    if (v.feature_layers.empty()) throw Error("config.json: vision_feature_layer is an empty list");
    const std::string strategy = raw.value("vision_feature_select_strategy", "default");
    if (strategy != "default") throw Error("config.json: vision_feature_select_strategy '" + strategy + "' is not supported");
    if (raw.value("projector_hidden_act", "gelu") != "gelu")
        throw Error("config.json: projector_hidden_act '" + raw.value("projector_hidden_act", "") + "' is not supported");
    if (!raw.value("multimodal_projector_bias", true)) throw Error("config.json: a projector without bias is not supported");

    const json pre = read_json(dir / "preprocessor_config.json");
    const json proc = read_json(dir / "processor_config.json");
    check_bicubic(pre);
    auto& p = v.preprocess;
    p.size = int(size_field(pre, "crop_size", "height", v.image_size));
    p.shortest_edge = int(size_field(pre, "size", "shortest_edge", v.image_size));
    p.mean = triple(pre, "image_mean", kClipMean);
    p.std = triple(pre, "image_std", kClipStd);
    // LlavaImageProcessor with do_pad is LLaVA's original "pad": a square of the mean colour first.
    p.mode = pre.value("do_pad", false) ? Preprocessing::Mode::PadToSquare : Preprocessing::Mode::ShortestEdgeCrop;
    if (p.mode == Preprocessing::Mode::ShortestEdgeCrop && !pre.value("do_center_crop", true))
        throw Error("preprocessor_config.json: do_center_crop false is not supported");
    if (p.size != v.image_size)
        throw Error("preprocessor_config.json: crop size " + std::to_string(p.size) + " differs from the vision tower's " +
                    std::to_string(v.image_size) + " (position embeddings would need interpolation)");
    // One token per patch: the class token the "default" strategy drops is not in the prompt.
    const int64_t grid = p.size / v.patch;
    v.tokens_per_tile = grid * grid;
    v.image_token = proc.value("image_token", "<image>");
    v.image_token_id = int32_t(integer(raw, "image_token_index",
                                       integer(raw, "image_token_id", token_id_of(tokenizer, v.image_token), -1, kMaxTokenId - 1, "config.json"),
                                       -1, kMaxTokenId - 1, "config.json"));
}

void load_internvl_chat(VisionConfig& v, const json& raw, const Tokenizer* tokenizer) {
    if (!raw.contains("vision_config")) throw Error("config.json: InternVL without a vision_config");
    const json& vc = raw["vision_config"];
    // InternVisionConfig's defaults are the 6B ViT's; the 300M configs spell everything out.
    read_vit_sizes(v, vc, {3200, 12800, 48, 25, 1e-6});
    v.patch = integer(vc, "patch_size", 14, 1, kMaxSide, "config.json: vision_config");
    v.image_size = integer(vc, "image_size", 224, 1, kMaxSide, "config.json: vision_config");
    v.rms_norm = vc.value("norm_type", "rms_norm") == "rms_norm";
    v.qkv_bias = vc.value("qkv_bias", false);
    v.qk_norm = vc.value("qk_normalization", true);
    if (vc.value("hidden_act", "gelu") != "gelu") throw Error("config.json: vision hidden_act '" + vc.value("hidden_act", "") + "' is not supported");
    v.layer_scale = true;
    use_feature_layer(v, integer(raw, "select_layer", -1, -kMaxVitLayers - 1, kMaxVitLayers, "config.json"));
    v.downsample = downsample_ratio(raw);
    v.shuffle_v2 = raw.value("ps_version", "v1") == "v2";
    const int64_t forced = integer(raw, "force_image_size", v.image_size, 1, kMaxSide, "config.json");
    resize_tower_input(v, forced, "config.json: force_image_size");
    auto& p = v.preprocess;
    p.mode = Preprocessing::Mode::Tiles;
    p.size = int(forced);
    p.mean = kImagenetMean;
    p.std = kImagenetStd;
    if (raw.value("dynamic_image_size", false)) {
        p.min_tiles = int(integer(raw, "min_dynamic_patch", 1, 1, kMaxTiles, "config.json"));
        p.max_tiles = int(integer(raw, "max_dynamic_patch", 6, 1, kMaxTiles, "config.json"));
        p.thumbnail = raw.value("use_thumbnail", false);
    } else {
        p.min_tiles = p.max_tiles = 1;
        p.thumbnail = false;
    }
    const int64_t grid = v.image_size / v.patch;
    v.tokens_per_tile = int64_t(double(grid * grid) * v.downsample * v.downsample);
    v.image_token = "<IMG_CONTEXT>";
    v.image_start = "<img>";
    v.image_end = "</img>";
    v.image_token_id = token_id_of(tokenizer, v.image_token);
}

void load_internvl_hf(VisionConfig& v, const json& raw, const std::filesystem::path& dir, const Tokenizer* tokenizer) {
    const json vc = raw.value("vision_config", json::object());
    read_vit_sizes(v, vc, {1024, 4096, 24, 16, 1e-6});  // InternVLVisionConfig's defaults
    v.patch = square_of(vc, "patch_size", 14);
    v.image_size = square_of(vc, "image_size", 448);
    if (v.patch < 1 || v.patch > kMaxSide || v.image_size < 1 || v.image_size > kMaxSide)
        throw Error("config.json: vision_config: patch_size and image_size must be from 1 to " + std::to_string(kMaxSide));
    v.rms_norm = vc.value("norm_type", "layer_norm") == "rms_norm";
    v.qkv_bias = vc.value("attention_bias", false);
    v.qk_norm = vc.value("use_qk_norm", false);
    if (vc.value("hidden_act", "gelu") != "gelu") throw Error("config.json: vision hidden_act '" + vc.value("hidden_act", "") + "' is not supported");
    if (!vc.value("use_mean_pooling", true)) throw Error("config.json: a vision tower with a final layernorm (use_mean_pooling false) is not supported");
    v.layer_scale = true;
    use_feature_layer(v, integer(raw, "vision_feature_layer", -1, -kMaxVitLayers - 1, kMaxVitLayers, "config.json"));
    if (raw.value("vision_feature_select_strategy", "default") != "default")
        throw Error("config.json: vision_feature_select_strategy '" + raw.value("vision_feature_select_strategy", "") + "' is not supported");
    if (raw.value("projector_hidden_act", "gelu") != "gelu")
        throw Error("config.json: projector_hidden_act '" + raw.value("projector_hidden_act", "") + "' is not supported");
    v.downsample = downsample_ratio(raw);
    v.shuffle_v2 = true;

    const json pre = read_json(dir / "preprocessor_config.json");
    const json proc = read_json(dir / "processor_config.json");
    const json tok = read_json(dir / "tokenizer_config.json");
    check_bicubic(pre);
    auto& p = v.preprocess;
    p.mode = Preprocessing::Mode::Tiles;  // InternVLProcessor turns crop_to_patches on
    p.size = int(size_field(pre, "size", "height", v.image_size));
    p.mean = triple(pre, "image_mean", kImagenetMean);
    p.std = triple(pre, "image_std", kImagenetStd);
    p.min_tiles = int(integer(pre, "min_patches", 1, 1, kMaxTiles, "preprocessor_config.json"));
    p.max_tiles = int(integer(pre, "max_patches", 12, 1, kMaxTiles, "preprocessor_config.json"));
    p.thumbnail = true;
    resize_tower_input(v, p.size, "preprocessor_config.json: size");
    const int64_t grid = v.image_size / v.patch;
    v.tokens_per_tile = integer(proc, "image_seq_length", int64_t(double(grid * grid) * v.downsample * v.downsample), 1,
                                kMaxSide * kMaxSide, "processor_config.json");
    const json extra = tok.value("extra_special_tokens", json::object());
    v.image_token = extra.is_object() ? extra.value("context_image_token", "<IMG_CONTEXT>") : "<IMG_CONTEXT>";
    v.image_start = extra.is_object() ? extra.value("start_image_token", "<img>") : "<img>";
    v.image_end = extra.is_object() ? extra.value("end_image_token", "</img>") : "</img>";
    v.image_token_id = int32_t(integer(raw, "image_token_id", token_id_of(tokenizer, v.image_token), -1, kMaxTokenId - 1, "config.json"));
}

VisionConfig read_vision_config(const std::filesystem::path& dir, const ModelConfig& config, const Tokenizer* tokenizer) {
    VisionConfig v;
    v.kind = config.kind;
    v.text_hidden = config.text.hidden_size;
    try {
        switch (config.kind) {
        case ModelKind::Llava: load_llava(v, config.raw, dir, tokenizer); break;
        case ModelKind::InternVLChat: load_internvl_chat(v, config.raw, tokenizer); break;
        case ModelKind::InternVLHf: load_internvl_hf(v, config.raw, dir, tokenizer); break;
        case ModelKind::Text: throw Error("the model reads text only");
        }
    } catch (const json::exception& e) {
        throw Error(std::string("config.json: a vision field has the wrong type (") + e.what() + ")");
    }
    if (v.hidden <= 0 || v.heads <= 0 || v.hidden % v.heads != 0 || v.layers <= 0 || v.intermediate <= 0)
        throw Error("config.json: the vision tower's sizes are inconsistent");
    if (v.patch <= 0 || v.image_size % v.patch != 0) throw Error("config.json: the image size is not a whole number of patches");
    if (v.kind != ModelKind::Llava) {
        const int64_t grid = v.image_size / v.patch;
        const double scaled = double(grid) * v.downsample;
        if (v.downsample != 0.5 || grid % 2 != 0)
            throw Error("config.json: downsample_ratio " + std::to_string(v.downsample) + " is not supported (0.5 with an even patch grid)");
        if (v.tokens_per_tile != int64_t(scaled * scaled)) throw Error("processor_config.json: image_seq_length disagrees with the vision tower");
    }
    if (v.tokens_per_tile <= 0) throw Error("the model's image token count is not positive");
    if (v.preprocess.min_tiles > v.preprocess.max_tiles)
        throw Error("the smallest number of image tiles (" + std::to_string(v.preprocess.min_tiles) +
                    ") is above the largest (" + std::to_string(v.preprocess.max_tiles) + ")");
    return v;
}

}  // namespace

VisionConfig load_vision_config(const std::filesystem::path& dir, const ModelConfig& config, const Tokenizer* tokenizer) {
    try {
        return read_vision_config(dir, config, tokenizer);
    } catch (const Error& e) {
        // Name the folder: the messages name the file within it ("config.json: ...").
        const std::string message = e.what();
        for (const char* file : {"config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json"})
            if (message.starts_with(std::string(file) + ":")) throw Error((dir / message).string());
        throw Error(message.starts_with(dir.string()) ? message : dir.string() + ": " + message);
    }
}

}  // namespace lumen::vision
