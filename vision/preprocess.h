#pragma once
// Images into the pixel values a vision encoder takes, exactly as the model's reference processor
// computes them with PIL: CLIPImageProcessor's shortest-edge resize and center crop, LLaVA's pad to
// a square, InternVL's tiles and thumbnail; the rescale by 1/255 and per-channel normalisation
// happen where the encoder runs, through pixel_levels.
#include <utility>
#include <vector>

#include "engine/runtime/image_input.h"
#include "vision/image.h"
#include "vision/vision_config.h"

namespace lumen::vision {

// The (columns, rows) of square tiles InternVL cuts an image into: the grid whose aspect ratio is
// closest to the image's, among those with min_tiles..max_tiles tiles; on a tie the larger grid
// wins when the image has more than half its pixels.
std::pair<int, int> tile_grid(int width, int height, int min_tiles, int max_tiles, int tile_size);

// The 8-bit squares the encoder sees, before normalisation (tiles in order, thumbnail last).
std::vector<RgbImage> preprocess_squares(const RgbImage& image, const Preprocessing& p);

// The squares as 8-bit NCHW planes, which the encoder normalises.
ImagePixels to_planes(const std::vector<RgbImage>& squares);

inline ImagePixels preprocess(const RgbImage& image, const Preprocessing& p) { return to_planes(preprocess_squares(image, p)); }

// What each 8-bit sample of each channel becomes ([3][256], channel-major): float32(u8 / 255),
// then (x - mean) / std in float32, as transformers' rescale and normalize compute it.
std::vector<float> pixel_levels(const Preprocessing& p);

// The normalised values of the planes, as the reference processor's pixel_values.
std::vector<float> normalize(const ImagePixels& pixels, const Preprocessing& p);

}  // namespace lumen::vision
