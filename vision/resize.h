#pragma once
// Resizing as PIL does it, to the bit: Image.resize(size, BICUBIC) on an 8-bit RGB image, whose
// output the reference image processors hand to the vision encoders.
#include "vision/image.h"

namespace lumen::vision {

// PIL's separable bicubic (a = -0.5, support widened by the scale when shrinking), weights in
// 22-bit fixed point, a horizontal then a vertical pass, each rounded and clipped to 8 bits.
// `Portable` keeps to plain loops, for tests that compare them with the vector ones (where the
// CPU has AVX2): both give the same bytes.
enum class ResizeKernels { Fastest, Portable };
RgbImage resize_bicubic(const RgbImage& image, int width, int height, ResizeKernels kernels = ResizeKernels::Fastest);

}  // namespace lumen::vision
