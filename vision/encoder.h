#pragma once
// The vision encoders (CLIP ViT for LLaVA, InternViT for InternVL, in both checkpoint layouts)
// with their projectors, written once against the backend's operations: pixels in, image
// embeddings in the language model's hidden size out.
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"
#include "engine/runtime/image_input.h"
#include "vision/vision_config.h"

namespace lumen::vision {

// The tower's linear layers (q/k/v, output, and both MLP products of every layer): as stored, or
// FP8 E4M3 with a scale per output channel, made at load (compute capability 8.9+ on a GPU; the CPU
// keeps a reference). The patch embedding and the projector stay as stored.
enum class TowerWeights { AsStored, Fp8 };

class VisionEncoder final : public ImageEncoder {
public:
    // Loads the tower and projector weights of the folder's checkpoint onto `backend`.
    VisionEncoder(const std::filesystem::path& dir, VisionConfig config, Backend& backend, TowerWeights tower = TowerWeights::AsStored);
    // Seeded random weights of `dtype` at the config's shapes, made by the backend (benchmarks).
    VisionEncoder(VisionConfig config, Backend& backend, DType dtype, uint64_t seed, TowerWeights tower = TowerWeights::AsStored);
    ~VisionEncoder() override;

    const VisionConfig& config() const { return config_; }
    int64_t tokens_for(const ImagePixels& pixels) const override { return int64_t(pixels.tiles) * config_.tokens_per_tile; }
    Tensor encode(const ImagePixels& pixels) override;
    uint64_t weight_bytes() const override { return weight_bytes_; }

private:
    struct Layer {
        Tensor norm1_w, norm1_b, bqkv, q_norm, k_norm, bo, ls1, norm2_w, norm2_b, fc1_b, fc2_b, ls2;
        Weight wqkv, wo, fc1_w, fc2_w;
    };
    // From the checkpoint, or (without one) random weights of `dtype` from `seed`.
    void load(const Checkpoint* c, DType dtype, uint64_t seed);
    void ensure_capacity(int64_t tiles);
    // The gathers' row orders for images of `tiles` tiles, made once and kept on the backend:
    // the tiles laid out after the patch embedding, and the patch rows the projector reads.
    struct RowOrders {
        Buffer tiles, projector;
    };
    const RowOrders& row_orders(int64_t tiles);
    void norm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor out);
    // Values per projector input row: the chosen hidden states side by side (LLaVA), or 2x2
    // patches side by side after InternVL's pixel shuffle.
    int64_t projector_inputs() const {
        return config_.kind == ModelKind::Llava ? config_.hidden * int64_t(config_.feature_layers.size()) : 4 * config_.hidden;
    }
    // Values per patch row: channels x patch x patch, padded to a multiple of 64 (cuBLASLt's fast
    // kernels want 128-byte rows: with 592 values the patch product took 3.7 ms instead of ~0.1).
    int64_t patch_columns() const { return (config_.channels * config_.patch * config_.patch + 63) / 64 * 64; }

    VisionConfig config_;
    Backend& backend_;
    TowerWeights tower_weights_;
    std::unique_ptr<Checkpoint> checkpoint_;
    // Keeps a weight's memory for the encoder's lifetime and returns its view.
    Tensor keep(Buffer weight);
    Weight keep(Backend::OwnedWeight weight);
    std::vector<Buffer> weights_;
    std::vector<std::vector<std::byte>> owned_;  // weights re-laid at load (fused q/k/v, padded conv, FP8), for a CPU backend
    uint64_t weight_bytes_ = 0;

    Tensor patch_w_, patch_b_, pixel_levels_, class_emb_, pos_emb_, pre_norm_w_, pre_norm_b_;
    std::vector<Layer> layers_;
    Tensor proj_norm_w_, proj_norm_b_, proj1_w_, proj1_b_, proj2_w_, proj2_b_;

    std::map<int64_t, RowOrders> row_orders_;
    int64_t capacity_ = 0;  // tiles the scratch below holds
    Buffer planes_, patches_, patch_out_, x_, h_, qkv_, attn_, delta_, inter_, layered_, features_, hidden_, out_;  // layered_: lists only
};

// The engine's factory: a VisionEncoder for the folder (vision-language models only).
std::unique_ptr<ImageEncoder> make_image_encoder(const std::filesystem::path& dir, const ModelConfig& config, Backend& backend);
// The factory for an engine whose tower weights are `tower`.
ImageEncoderFactory image_encoder_factory(TowerWeights tower);
// "16" or "auto" (as stored) and "fp8" (lumen::Error naming the choices for anything else).
TowerWeights parse_tower_weights(const std::string& name);

}  // namespace lumen::vision
