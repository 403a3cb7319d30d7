#pragma once
// Resizing as PIL does it, to the bit: Image.resize(size, BICUBIC) on an 8-bit RGB image, whose
// output the reference image processors hand to the vision encoders.
#include "vision/image.h"

namespace lumen::vision {

// PIL's separable bicubic (a = -0.5, support widened by the scale when shrinking), weights in
// 22-bit fixed point, a horizontal then a vertical pass, each rounded and clipped to 8 bits.
RgbImage resize_bicubic(const RgbImage& image, int width, int height);

}  // namespace lumen::vision
