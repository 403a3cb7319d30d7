#pragma once
// Images as the models' reference code sees them: decoded, EXIF orientation applied, converted to
// 8-bit RGB as PIL's convert("RGB") does. The size is read from the header and checked before any
// pixel is decoded, and a broken or truncated file is an error with a readable message.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "engine/util/uninitialized.h"

namespace lumen::vision {

enum class ImageFormat { Png, Jpeg, WebP, Bmp, Gif };
const char* format_name(ImageFormat f);

struct ImageInfo {
    ImageFormat format = ImageFormat::Png;
    int width = 0;   // as stored, before EXIF orientation
    int height = 0;
};

// Format and size from the first bytes; throws lumen::Error for anything else.
ImageInfo probe_image(std::span<const uint8_t> bytes);

// 8-bit RGB, rows top to bottom, no padding.
struct RgbImage {
    int width = 0;
    int height = 0;
    std::vector<uint8_t, UninitializedAllocator<uint8_t>> pixels;  // width * height * 3, unset until written

    RgbImage() = default;
    RgbImage(int w, int h) : width(w), height(h), pixels(size_t(w) * size_t(h) * 3) {}
    uint8_t* row(int y) { return pixels.data() + size_t(y) * size_t(width) * 3; }
    const uint8_t* row(int y) const { return pixels.data() + size_t(y) * size_t(width) * 3; }
    // The pixels of `box` (x, y, w, h) inside this image.
    RgbImage crop(int x, int y, int w, int h) const;
};

struct DecodeLimits {
    int64_t max_pixels = 50'000'000;  // width * height, checked from the header
};

RgbImage decode_image(std::span<const uint8_t> bytes, const DecodeLimits& limits = {});
RgbImage load_image(const std::filesystem::path& path, const DecodeLimits& limits = {});
// A file's bytes; throws lumen::Error naming the file when it cannot be read.
std::vector<uint8_t> load_image_bytes(const std::filesystem::path& path);

// The orientation (1-8) an image carries, as PIL's exif_transpose reads it: EXIF's tag, else (no
// tag) the XMP packet's tiff:Orientation; 1 when there is none.
int exif_orientation(std::span<const uint8_t> bytes, ImageFormat format);
// Turns an image stored with EXIF `orientation` upright (PIL's ImageOps.exif_transpose); an
// upright one is handed back as it is.
RgbImage apply_orientation(RgbImage image, int orientation);

}  // namespace lumen::vision
