#include "vision/resize.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "engine/thread_pool.h"

namespace lumen::vision {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
    constexpr double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

// The taps of each output sample along one axis: the first input index, how many, and the
// fixed-point weights (ksize per output, unused ones zero).
struct Taps {
    int ksize = 0;
    std::vector<int> first, count;
    std::vector<int32_t> weights;
};

Taps compute_taps(int in_size, int out_size) {
    const double scale = double(in_size) / out_size;
    const double filter_scale = std::max(scale, 1.0);
    const double support = 2.0 * filter_scale;
    Taps t;
    t.ksize = int(std::ceil(support)) * 2 + 1;
    t.first.resize(size_t(out_size));
    t.count.resize(size_t(out_size));
    t.weights.assign(size_t(out_size) * size_t(t.ksize), 0);
    std::vector<double> k(size_t(t.ksize));
    for (int o = 0; o < out_size; ++o) {
        const double center = (o + 0.5) * scale;
        // Truncation toward zero, then clamping, as PIL's int casts do.
        int lo = int(center - support + 0.5);
        if (lo < 0) lo = 0;
        int hi = int(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        const int n = hi - lo;
        double sum = 0.0;
        for (int i = 0; i < n; ++i) {
            k[size_t(i)] = bicubic((i + lo - center + 0.5) / filter_scale);
            sum += k[size_t(i)];
        }
        for (int i = 0; i < n; ++i) {
            const double w = sum != 0.0 ? k[size_t(i)] / sum : k[size_t(i)];
            // Rounded half away from zero into fixed point.
            t.weights[size_t(o) * size_t(t.ksize) + size_t(i)] =
                int32_t(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
        }
        t.first[size_t(o)] = lo;
        t.count[size_t(o)] = n;
    }
    return t;
}

uint8_t clip8(int32_t acc) {
    const int32_t v = acc >> kPrecisionBits;
    return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// 32-bit accumulators, as PIL's: the weights' fixed point leaves room for 8-bit samples.
// Rows are independent in both passes: they are split over the shared worker threads (a 1920x1080
// screenshot's tiles take tens of milliseconds on one core).
constexpr std::size_t kRowsPerTask = 8;

RgbImage horizontal(const RgbImage& in, int width) {
    const Taps t = compute_taps(in.width, width);
    RgbImage out(width, in.height);
    ThreadPool::shared().parallel_for(std::size_t(in.height), kRowsPerTask, [&](std::size_t begin, std::size_t end) {
        for (std::size_t y = begin; y < end; ++y) {
            const uint8_t* src = in.row(int(y));
            uint8_t* dst = out.row(int(y));
            for (int x = 0; x < width; ++x) {
                const int32_t* w = &t.weights[size_t(x) * size_t(t.ksize)];
                const uint8_t* s = src + 3 * size_t(t.first[size_t(x)]);
                int32_t acc[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
                for (int i = 0; i < t.count[size_t(x)]; ++i)
                    for (int c = 0; c < 3; ++c) acc[c] += int32_t(s[3 * i + c]) * w[i];
                for (int c = 0; c < 3; ++c) dst[3 * x + c] = clip8(acc[c]);
            }
        }
    });
    return out;
}

RgbImage vertical(const RgbImage& in, int height) {
    const Taps t = compute_taps(in.height, height);
    RgbImage out(in.width, height);
    const size_t row_bytes = size_t(in.width) * 3;
    ThreadPool::shared().parallel_for(std::size_t(height), kRowsPerTask, [&](std::size_t begin, std::size_t end) {
        std::vector<int32_t> acc(row_bytes);
        for (std::size_t y = begin; y < end; ++y) {
            const int32_t* w = &t.weights[y * size_t(t.ksize)];
            std::fill(acc.begin(), acc.end(), int32_t(1) << (kPrecisionBits - 1));
            for (int i = 0; i < t.count[y]; ++i) {
                const uint8_t* s = in.row(t.first[y] + i);
                const int32_t wi = w[i];
                for (size_t b = 0; b < row_bytes; ++b) acc[b] += int32_t(s[b]) * wi;
            }
            uint8_t* dst = out.row(int(y));
            for (size_t b = 0; b < row_bytes; ++b) dst[b] = clip8(acc[b]);
        }
    });
    return out;
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& image, int width, int height) {
    if (width <= 0 || height <= 0 || image.width <= 0 || image.height <= 0)
        throw Error("cannot resize an image to or from an empty size");
    if (width == image.width && height == image.height) return image;
    if (width == image.width) return vertical(image, height);
    RgbImage across = horizontal(image, width);
    return height == image.height ? across : vertical(across, height);
}

}  // namespace lumen::vision
