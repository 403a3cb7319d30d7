#include "vision/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/util/error.h"
#include "engine/util/thread_pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LUMEN_RESIZE_AVX2 1
#endif

namespace lumen::vision {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int32_t kHalf = int32_t(1) << (kPrecisionBits - 1);

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

// 32-bit accumulators, as PIL's: the weights' fixed point leaves room for 8-bit samples. The
// vector loops add the same products in another order; the sums are the same integers (none
// leaves 32 bits), so every path gives PIL's bytes.

void horizontal_row(const uint8_t* src, uint8_t* dst, int width, const Taps& t) {
    for (int x = 0; x < width; ++x) {
        const int32_t* w = &t.weights[size_t(x) * size_t(t.ksize)];
        const uint8_t* s = src + 3 * size_t(t.first[size_t(x)]);
        int32_t acc[3] = {kHalf, kHalf, kHalf};
        for (int i = 0; i < t.count[size_t(x)]; ++i)
            for (int c = 0; c < 3; ++c) acc[c] += int32_t(s[3 * i + c]) * w[i];
        for (int c = 0; c < 3; ++c) dst[3 * x + c] = clip8(acc[c]);
    }
}

// dst[b] for b in [begin, end): the taps' rows weighted and summed, a tap at a time over all the
// bytes (a loop the compiler vectorises), in `acc`.
void vertical_bytes(const uint8_t* const* rows, const int32_t* w, int count, size_t begin, size_t end, int32_t* __restrict acc,
                    uint8_t* __restrict dst) {
    const size_t n = end - begin;
    std::fill(acc, acc + n, kHalf);
    for (int i = 0; i < count; ++i) {
        const uint8_t* __restrict s = rows[i] + begin;
        const int32_t wi = w[i];
        for (size_t b = 0; b < n; ++b) acc[b] += int32_t(s[b]) * wi;
    }
    for (size_t b = 0; b < n; ++b) dst[begin + b] = clip8(acc[b]);
}

#ifdef LUMEN_RESIZE_AVX2
bool have_avx2() {
    static const bool yes = __builtin_cpu_supports("avx2");
    return yes;
}

// The horizontal pass two taps at a time: each tap's pixel spread over four 32-bit lanes (R, G, B
// and one unused), the two taps' weights each repeated four times. `pairs` holds them per output
// sample, `stride` values apart. Reads up to 5 bytes past the last tap's pixel.
__attribute__((target("avx2"))) void horizontal_row_avx2(const uint8_t* src, uint8_t* dst, int width, const Taps& t,
                                                         const int32_t* pairs, size_t stride) {
    const __m128i spread = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    for (int x = 0; x < width; ++x) {
        const uint8_t* s = src + 3 * size_t(t.first[size_t(x)]);
        const int32_t* w = pairs + size_t(x) * stride;
        __m256i acc = _mm256_setzero_si256();
        for (int p = 0, n = (t.count[size_t(x)] + 1) / 2; p < n; ++p) {
            const __m128i two = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + 6 * p));
            const __m256i samples = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(two, spread));
            const __m256i weights = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 8 * p));
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(samples, weights));
        }
        __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        sum = _mm_srai_epi32(_mm_add_epi32(sum, _mm_set1_epi32(kHalf)), kPrecisionBits);
        sum = _mm_packs_epi32(sum, sum);
        const uint32_t rgb = uint32_t(_mm_cvtsi128_si32(_mm_packus_epi16(sum, sum)));
        // Four bytes where the next sample's first will be written anyway; three at the row's end.
        if (x + 1 < width) std::memcpy(dst + 3 * size_t(x), &rgb, 4);
        else std::memcpy(dst + 3 * size_t(x), &rgb, 3);
    }
}

// The vertical pass 32 bytes at a time, the rest byte by byte.
__attribute__((target("avx2"))) void vertical_row_avx2(const uint8_t* const* rows, const int32_t* w, int count, size_t bytes,
                                                       int32_t* acc, uint8_t* dst) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t b = 0;
    for (; b + 32 <= bytes; b += 32) {
        __m256i sums[4];
        for (auto& a : sums) a = _mm256_set1_epi32(kHalf);
        for (int i = 0; i < count; ++i) {
            const __m256i wi = _mm256_set1_epi32(w[i]);
            for (int q = 0; q < 4; ++q) {
                const __m128i eight = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(rows[i] + b + 8 * size_t(q)));
                sums[q] = _mm256_add_epi32(sums[q], _mm256_mullo_epi32(_mm256_cvtepu8_epi32(eight), wi));
            }
        }
        for (auto& a : sums) a = _mm256_srai_epi32(a, kPrecisionBits);
        // The packs work within 128-bit halves; the permutation puts the 4-byte groups back in order.
        const __m256i bytes8 = _mm256_packus_epi16(_mm256_packs_epi32(sums[0], sums[1]), _mm256_packs_epi32(sums[2], sums[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + b), _mm256_permutevar8x32_epi32(bytes8, order));
    }
    vertical_bytes(rows, w, count, b, bytes, acc, dst);
}
#endif

// Rows are independent in both passes: they are split over the shared worker threads (a 1920x1080
// screenshot's tiles take tens of milliseconds on one core without vectors).
constexpr std::size_t kRowsPerTask = 8;

RgbImage horizontal(const RgbImage& in, int width, ResizeKernels kernels) {
    const Taps t = compute_taps(in.width, width);
    RgbImage out(width, in.height);
#ifdef LUMEN_RESIZE_AVX2
    if (kernels == ResizeKernels::Fastest && have_avx2()) {
        const size_t stride = size_t(t.ksize + 1) / 2 * 8;
        std::vector<int32_t> pairs(size_t(width) * stride, 0);
        for (size_t x = 0; x < size_t(width); ++x)
            for (size_t i = 0; i < size_t(t.count[x]); ++i)
                for (size_t c = 0; c < 4; ++c) pairs[x * stride + i / 2 * 8 + i % 2 * 4 + c] = t.weights[x * size_t(t.ksize) + i];
        // The loads' few bytes past a row's end are the next row's, except after the last row:
        // that one is read from a padded copy.
        const size_t row_bytes = size_t(in.width) * 3;
        std::vector<uint8_t> last(row_bytes + 8, 0);
        std::memcpy(last.data(), in.row(in.height - 1), row_bytes);
        ThreadPool::shared().parallel_for(std::size_t(in.height), kRowsPerTask, [&](std::size_t begin, std::size_t end) {
            for (std::size_t y = begin; y < end; ++y) {
                const uint8_t* src = int(y) + 1 < in.height ? in.row(int(y)) : last.data();
                horizontal_row_avx2(src, out.row(int(y)), width, t, pairs.data(), stride);
            }
        });
        return out;
    }
#endif
    (void)kernels;
    ThreadPool::shared().parallel_for(std::size_t(in.height), kRowsPerTask, [&](std::size_t begin, std::size_t end) {
        for (std::size_t y = begin; y < end; ++y) horizontal_row(in.row(int(y)), out.row(int(y)), width, t);
    });
    return out;
}

RgbImage vertical(const RgbImage& in, int height, ResizeKernels kernels) {
    const Taps t = compute_taps(in.height, height);
    RgbImage out(in.width, height);
    const size_t row_bytes = size_t(in.width) * 3;
#ifdef LUMEN_RESIZE_AVX2
    const bool avx2 = kernels == ResizeKernels::Fastest && have_avx2();
#else
    (void)kernels;
#endif
    ThreadPool::shared().parallel_for(std::size_t(height), kRowsPerTask, [&](std::size_t begin, std::size_t end) {
        std::vector<const uint8_t*> rows(size_t(t.ksize));
        std::vector<int32_t> acc(row_bytes);
        for (std::size_t y = begin; y < end; ++y) {
            const int count = t.count[y];
            for (int i = 0; i < count; ++i) rows[size_t(i)] = in.row(t.first[y] + i);
            const int32_t* w = &t.weights[y * size_t(t.ksize)];
#ifdef LUMEN_RESIZE_AVX2
            if (avx2) {
                vertical_row_avx2(rows.data(), w, count, row_bytes, acc.data(), out.row(int(y)));
                continue;
            }
#endif
            vertical_bytes(rows.data(), w, count, 0, row_bytes, acc.data(), out.row(int(y)));
        }
    });
    return out;
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& image, int width, int height, ResizeKernels kernels) {
    if (width <= 0 || height <= 0 || image.width <= 0 || image.height <= 0)
        throw Error("cannot resize an image to or from an empty size");
    if (width == image.width && height == image.height) return image;
    if (width == image.width) return vertical(image, height, kernels);
    RgbImage across = horizontal(image, width, kernels);
    return height == image.height ? across : vertical(across, height, kernels);
}

}  // namespace lumen::vision
