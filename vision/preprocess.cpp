#include "vision/preprocess.h"

#include <cmath>
#include <cstring>

#include "engine/util/error.h"
#include "engine/util/thread_pool.h"
#include "vision/resize.h"

namespace lumen::vision {
namespace {

// A `size` square from the middle of the image, zero-padded where the image is smaller (the
// extra padding pixel top and left, as transformers' center_crop).
RgbImage center_crop(const RgbImage& in, int size) {
    RgbImage out(size, size);
    if (in.width < size || in.height < size) std::fill(out.pixels.begin(), out.pixels.end(), uint8_t(0));
    const int pad_x = in.width < size ? (size - in.width + 1) / 2 : 0;
    const int pad_y = in.height < size ? (size - in.height + 1) / 2 : 0;
    const int left = in.width >= size ? (in.width - size) / 2 : 0;
    const int top = in.height >= size ? (in.height - size) / 2 : 0;
    const int w = std::min(size, in.width), h = std::min(size, in.height);
    for (int y = 0; y < h; ++y)
        std::memcpy(out.row(pad_y + y) + 3 * size_t(pad_x), in.row(top + y) + 3 * size_t(left), 3 * size_t(w));
    return out;
}

void check_working_size(const RgbImage& image, int64_t width, int64_t height, int64_t limit) {
    if (width * height <= limit) return;
    throw Error("the image is " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                " pixels, a shape this model's preprocessing would first turn into " + std::to_string(width) + "x" +
                std::to_string(height) + ", more than Lumen allows (" + std::to_string(limit / 1'000'000) +
                " megapixels); crop it to a less extreme shape");
}

}  // namespace

std::pair<int, int> tile_grid(int width, int height, int min_tiles, int max_tiles, int tile_size) {
    // Candidates in transformers' order: columns, then rows, stable-sorted by tile count.
    std::vector<std::pair<int, int>> grids;
    for (int n = 1; n <= max_tiles; ++n)
        for (int c = 1; c <= max_tiles; ++c)
            for (int r = 1; r <= max_tiles; ++r)
                if (c * r == n && n >= min_tiles) grids.push_back({c, r});
    const double aspect = double(width) / double(height);
    const double area = double(width) * double(height);
    std::pair<int, int> best{1, 1};
    double best_diff = INFINITY;
    for (const auto& [c, r] : grids) {
        const double diff = std::fabs(aspect - double(c) / double(r));
        if (diff < best_diff) {
            best_diff = diff;
            best = {c, r};
        } else if (diff == best_diff && area > 0.5 * tile_size * tile_size * c * r) {
            best = {c, r};
        }
    }
    return best;
}

std::vector<RgbImage> preprocess_squares(const RgbImage& image, const Preprocessing& p) {
    if (image.width <= 0 || image.height <= 0) throw Error("the image is empty");
    std::vector<RgbImage> out;
    switch (p.mode) {
    case Preprocessing::Mode::PadToSquare: {
        // The mean colour as LLaVA computes it: int(mean * 255), truncated.
        const int side = std::max(image.width, image.height);
        check_working_size(image, side, side, p.max_working_pixels);
        RgbImage square(side, side);
        uint8_t fill[3];
        for (int c = 0; c < 3; ++c) fill[c] = uint8_t(int(double(p.mean[size_t(c)]) * 255.0));
        for (int x = 0; x < side; ++x) std::memcpy(square.row(0) + 3 * size_t(x), fill, 3);
        for (int y = 1; y < side; ++y) std::memcpy(square.row(y), square.row(0), 3 * size_t(side));
        const int left = (side - image.width) / 2, top = (side - image.height) / 2;
        for (int y = 0; y < image.height; ++y) std::memcpy(square.row(top + y) + 3 * size_t(left), image.row(y), 3 * size_t(image.width));
        out.push_back(center_crop(resize_bicubic(square, p.shortest_edge, p.shortest_edge), p.size));
        break;
    }
    case Preprocessing::Mode::ShortestEdgeCrop: {
        // transformers' get_resize_output_image_size: the long side is int(edge * long / short).
        const bool portrait = image.width <= image.height;
        const int shorter = portrait ? image.width : image.height, longer = portrait ? image.height : image.width;
        const auto scaled64 = int64_t(double(int64_t(p.shortest_edge) * longer) / double(shorter));
        check_working_size(image, p.shortest_edge, scaled64, p.max_working_pixels);
        const int scaled = int(scaled64);
        const RgbImage resized = portrait ? resize_bicubic(image, p.shortest_edge, scaled) : resize_bicubic(image, scaled, p.shortest_edge);
        out.push_back(center_crop(resized, p.size));
        break;
    }
    case Preprocessing::Mode::Tiles: {
        const int s = p.size;
        if (p.max_tiles <= 1) {
            out.push_back(resize_bicubic(image, s, s));
            break;
        }
        const std::pair<int, int> grid = tile_grid(image.width, image.height, p.min_tiles, p.max_tiles, s);
        const int cols = grid.first, rows = grid.second;  // not a structured binding: the lambda below uses them
        const RgbImage canvas = resize_bicubic(image, s * cols, s * rows);
        out.resize(size_t(cols * rows));
        ThreadPool::shared().parallel_for(out.size(), 1, [&](std::size_t begin, std::size_t end) {
            for (std::size_t i = begin; i < end; ++i) out[i] = canvas.crop(int(i % size_t(cols)) * s, int(i / size_t(cols)) * s, s, s);
        });
        if (p.thumbnail && out.size() != 1) out.push_back(resize_bicubic(image, s, s));
        break;
    }
    }
    return out;
}

ImagePixels to_planes(const std::vector<RgbImage>& squares) {
    ImagePixels px;
    px.tiles = int32_t(squares.size());
    px.channels = 3;
    px.height = px.width = squares.empty() ? 0 : squares.front().height;
    const size_t plane = size_t(px.height) * size_t(px.width);
    px.values.resize(squares.size() * 3 * plane);
    // One plane per task: tiles times channels.
    ThreadPool::shared().parallel_for(squares.size() * 3, 1, [&](std::size_t begin, std::size_t end) {
        for (size_t k = begin; k < end; ++k) {
            const uint8_t* src = squares[k / 3].pixels.data() + k % 3;
            uint8_t* dst = px.values.data() + k * plane;
            for (size_t i = 0; i < plane; ++i) dst[i] = src[3 * i];
        }
    });
    return px;
}

std::vector<float> pixel_levels(const Preprocessing& p) {
    // transformers rescales in float64, then casts to float32, and normalises in float32.
    std::vector<float> levels(3 * 256);
    for (size_t c = 0; c < 3; ++c)
        for (int v = 0; v < 256; ++v) levels[c * 256 + size_t(v)] = (float(double(v) * (1.0 / 255.0)) - p.mean[c]) / p.std[c];
    return levels;
}

std::vector<float> normalize(const ImagePixels& pixels, const Preprocessing& p) {
    const std::vector<float> levels = pixel_levels(p);
    const size_t plane = size_t(pixels.height) * size_t(pixels.width);
    std::vector<float> out(pixels.values.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = levels[i / plane % size_t(pixels.channels) * 256 + pixels.values[i]];
    return out;
}

}  // namespace lumen::vision
