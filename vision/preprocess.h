#pragma once
// Images into the pixel values a vision encoder takes, exactly as the model's reference processor
// computes them with PIL: CLIPImageProcessor's shortest-edge resize and center crop, LLaVA's pad to
// a square, InternVL's tiles and thumbnail; then rescale by 1/255 and normalise per channel.
#include <utility>
#include <vector>

#include "engine/image_input.h"
#include "vision/image.h"
#include "vision/vision_config.h"

namespace lumen::vision {

// The (columns, rows) of square tiles InternVL cuts an image into: the grid whose aspect ratio is
// closest to the image's, among those with min_tiles..max_tiles tiles; on a tie the larger grid
// wins when the image has more than half its pixels.
std::pair<int, int> tile_grid(int width, int height, int min_tiles, int max_tiles, int tile_size);

// The 8-bit squares the encoder sees, before normalisation (tiles in order, thumbnail last).
std::vector<RgbImage> preprocess_squares(const RgbImage& image, const Preprocessing& p);

// Normalised NCHW pixels: float32(u8 / 255), then (x - mean) / std in float32.
ImagePixels normalize(const std::vector<RgbImage>& squares, const Preprocessing& p);

inline ImagePixels preprocess(const RgbImage& image, const Preprocessing& p) { return normalize(preprocess_squares(image, p), p); }

}  // namespace lumen::vision
