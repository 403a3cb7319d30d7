// The CPU backend's arithmetic: rows converted to fp32, vectorised dot products, the dense
// product. Written for the x86-64-v3 clones GCC makes (AVX2 + FMA) and a portable fallback.
#include "engine/backend/cpu_math.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/util/error.h"
#include "engine/util/thread_pool.h"

namespace lumen::cpu {


// Half-precision to fp32 by table: 256 KiB, filled once.
const float* f16_table() {
    static const std::unique_ptr<float[]> table = [] {
        auto t = std::make_unique<float[]>(65536);
        for (uint32_t h = 0; h < 65536; ++h) t[h] = f16_to_f32(uint16_t(h));
        return t;
    }();
    return table.get();
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
void bf16_row_to_f32(const uint16_t* src, int64_t n, float* dst) {
    for (int64_t i = 0; i < n; ++i) {
        const uint32_t bits = uint32_t(src[i]) << 16;
        std::memcpy(&dst[i], &bits, 4);
    }
}

void f16_row_to_f32(const uint16_t* src, int64_t n, float* dst) {
    const float* table = f16_table();
    for (int64_t i = 0; i < n; ++i) dst[i] = table[src[i]];
}

// Row `r` of a weight as fp32: in place for F32, else converted into `scratch`.
const float* row_f32(const Tensor& w, int64_t r, float* scratch) {
    const std::byte* base = static_cast<const std::byte*>(w.data) + r * w.stride * int64_t(dtype_size(w.dtype));
    switch (w.dtype) {
    case DType::F32: return reinterpret_cast<const float*>(base);
    case DType::BF16: bf16_row_to_f32(reinterpret_cast<const uint16_t*>(base), w.cols, scratch); return scratch;
    case DType::F16: f16_row_to_f32(reinterpret_cast<const uint16_t*>(base), w.cols, scratch); return scratch;
    default: throw Error("CPU backend: weights of type " + std::string(dtype_name(w.dtype)) + " are not supported");
    }
}

float* frow(const Tensor& t, int64_t r) { return static_cast<float*>(t.data) + r * t.stride; }

__attribute__((target_clones("arch=x86-64-v3", "default")))
float dot(const float* a, const float* b, int64_t n) {
    float acc[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; ++k) acc[k] += a[i + k] * b[i + k];
    float s = 0;
    for (int k = 0; k < 16; ++k) s += acc[k];
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

typedef float v8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

// Macros rather than functions: vector values must not cross a function boundary whose ABI
// differs between the AVX and the baseline clone.
#define LUMEN_LOAD8(dst, p) std::memcpy(&(dst), (p), sizeof(v8))
#define LUMEN_LOAD_BF16X8(dst, p)                                           \
    do {                                                                    \
        u16x8 h_;                                                           \
        std::memcpy(&h_, (p), sizeof h_);                                   \
        const u32x8 bits_ = __builtin_convertvector(h_, u32x8) << 16;       \
        std::memcpy(&(dst), &bits_, sizeof(v8));                            \
    } while (0)

inline float hsum(const v8& v) {
    float s = 0;
    for (int i = 0; i < 8; ++i) s += v[i];
    return s;
}

// out[2a + b] = x[a] · w[b] for four activation rows and two weight rows: eight accumulators,
// each loaded vector used twice or four times (the prefill GEMM's inner kernel).
__attribute__((target_clones("arch=x86-64-v3", "default")))
void dot_4x2(const float* const* x, const float* w0, const float* w1, int64_t k, float* out) {
    v8 a00 = {}, a01 = {}, a10 = {}, a11 = {}, a20 = {}, a21 = {}, a30 = {}, a31 = {};
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        v8 b0, b1, v;
        LUMEN_LOAD8(b0, w0 + i);
        LUMEN_LOAD8(b1, w1 + i);
        LUMEN_LOAD8(v, x[0] + i);
        a00 += v * b0, a01 += v * b1;
        LUMEN_LOAD8(v, x[1] + i);
        a10 += v * b0, a11 += v * b1;
        LUMEN_LOAD8(v, x[2] + i);
        a20 += v * b0, a21 += v * b1;
        LUMEN_LOAD8(v, x[3] + i);
        a30 += v * b0, a31 += v * b1;
    }
    float r[8] = {hsum(a00), hsum(a01), hsum(a10), hsum(a11), hsum(a20), hsum(a21), hsum(a30), hsum(a31)};
    for (; i < k; ++i)
        for (int a = 0; a < 4; ++a) r[2 * a] += x[a][i] * w0[i], r[2 * a + 1] += x[a][i] * w1[i];
    std::memcpy(out, r, sizeof r);
}

// out[b] = x · w[b] for four bf16 weight rows read straight from the mapped file (decode: every
// weight byte is read once per token, so converting through a buffer would only add traffic).
__attribute__((target_clones("arch=x86-64-v3", "default")))
void dot_bf16_x4(const float* x, const uint16_t* const* w, int64_t k, float* out) {
    v8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        v8 v, w0, w1, w2, w3;
        LUMEN_LOAD8(v, x + i);
        LUMEN_LOAD_BF16X8(w0, w[0] + i);
        LUMEN_LOAD_BF16X8(w1, w[1] + i);
        LUMEN_LOAD_BF16X8(w2, w[2] + i);
        LUMEN_LOAD_BF16X8(w3, w[3] + i);
        a0 += v * w0, a1 += v * w1, a2 += v * w2, a3 += v * w3;
    }
    float r[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    for (; i < k; ++i)
        for (int b = 0; b < 4; ++b) r[b] += x[i] * bf16_to_f32(w[b][i]);
    std::memcpy(out, r, sizeof r);
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
float sum(const float* a, int64_t n) {
    float acc[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; ++k) acc[k] += a[i + k];
    float s = 0;
    for (int k = 0; k < 16; ++k) s += acc[k];
    for (; i < n; ++i) s += a[i];
    return s;
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
void axpy(float a, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void check_f32(const Tensor& t, const char* what) {
    if (t.dtype != DType::F32) throw Error(std::string("CPU backend: ") + what + " must be F32");
}

uint64_t random_bits(uint64_t seed, uint64_t i) {
    uint64_t z = (seed ^ (i * 0xD1B54A32D192ED03ull)) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float random_unit(uint64_t seed, uint64_t i) { return float(random_bits(seed, i) >> 40) * (1.0f / 16777216.0f); }

// Work below this many multiply-adds per thread is not worth waking threads for.
constexpr std::size_t kMinWorkPerThread = 1 << 15;

std::size_t grain_for(std::size_t work_per_item) {
    return std::max<std::size_t>(1, kMinWorkPerThread / std::max<std::size_t>(1, work_per_item));
}

void normalize_row(const float* x, const float* w, int64_t n, float eps, float* out) {
    float acc[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) acc[k] += x[i + k] * x[i + k];
    float ss = 0;
    for (int k = 0; k < 8; ++k) ss += acc[k];
    for (; i < n; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / float(n) + eps);
    for (int64_t j = 0; j < n; ++j) out[j] = w[j] * (x[j] * inv);
}

const float* weight_row_f32(const Weight& w, int64_t r, float* scratch) {
    switch (w.format) {
    case Weight::Format::Dense: return row_f32(w.values, r, scratch);
    case Weight::Format::Int4: {
        const int64_t in = w.in_features(), groups = in / w.group_size;
        thread_local std::vector<float> scales;
        scales.resize(std::size_t(groups));
        const float* s = row_f32(w.scales, r, scales.data());
        const uint8_t* z = static_cast<const uint8_t*>(w.zeros.data) + r * w.zeros.stride;
        const uint32_t* q = static_cast<const uint32_t*>(w.values.data) + r * w.values.stride;
        for (int64_t g = 0; g < groups; ++g) {
            const float scale = s[g], zero = float(z[g]);
            for (int64_t i = g * w.group_size; i < (g + 1) * w.group_size; ++i)
                scratch[i] = (float((q[i / 8] >> (4 * (i % 8))) & 15u) - zero) * scale;
        }
        return scratch;
    }
    case Weight::Format::Int8: {
        float converted;
        const float* s = row_f32(w.scales, r, &converted);
        const int8_t* q = static_cast<const int8_t*>(w.values.data) + r * w.values.stride;
        for (int64_t i = 0; i < w.values.cols; ++i) scratch[i] = float(q[i]) * s[0];
        return scratch;
    }
    case Weight::Format::Fp8: {
        const int64_t in = w.values.cols, groups = fp8_groups(in, w.group_size);
        thread_local std::vector<float> scales;
        scales.resize(std::size_t(groups));
        const float* s = row_f32(w.scales, r, scales.data());
        static const std::array<float, 256> decoded = [] {
            std::array<float, 256> t{};
            for (int c = 0; c < 256; ++c) t[std::size_t(c)] = e4m3_to_f32(uint8_t(c));
            return t;
        }();
        const uint8_t* q = static_cast<const uint8_t*>(w.values.data) + r * w.values.stride;
        for (int64_t g = 0; g < groups; ++g)
            for (int64_t i = g * w.group_size, end = std::min(in, i + w.group_size); i < end; ++i) scratch[i] = decoded[q[i]] * s[g];
        return scratch;
    }
    }
    return scratch;
}

void matmul(const Tensor& x_in, const Weight& w, const Tensor& bias, Tensor out) {
    // GPTQ's activation order: the columns of x in the order the weight's groups were laid.
    std::vector<float> reordered;
    Tensor x = x_in;
    if (!w.input_order.empty()) {
        const int32_t* order = static_cast<const int32_t*>(w.input_order.data);
        reordered.resize(std::size_t(x.rows * x.cols));
        for (int64_t t = 0; t < x.rows; ++t)
            for (int64_t i = 0; i < x.cols; ++i) reordered[std::size_t(t * x.cols + i)] = frow(x_in, t)[order[i]];
        x = Tensor{reordered.data(), DType::F32, x.rows, x.cols, x.cols};
    }
    std::vector<float> b;
    const float* bp = nullptr;
    if (!bias.empty()) {
        b.resize(std::size_t(bias.rows * bias.cols));
        bp = row_f32(Tensor{bias.data, bias.dtype, 1, bias.rows * bias.cols, bias.rows * bias.cols}, 0, b.data());
    }
    const int64_t in = x.cols, n = x.rows, out_rows = w.out_features();
    auto store = [&](int64_t t, int64_t r, float v) { frow(out, t)[r] = v + (bp ? bp[r] : 0.0f); };
    // Few tokens and bf16 weights: dot products straight from the weights, four rows at a time.
    if (n <= 2 && w.format == Weight::Format::Dense && w.values.dtype == DType::BF16) {
        ThreadPool::shared().parallel_for(std::size_t((out_rows + 3) / 4), grain_for(std::size_t(in * n * 4)),
                                          [&](std::size_t bb, std::size_t be) {
            for (std::size_t blk = bb; blk < be; ++blk) {
                const int64_t r0 = int64_t(blk) * 4, count = std::min<int64_t>(4, out_rows - r0);
                const uint16_t* rows[4];
                for (int64_t k = 0; k < 4; ++k)
                    rows[k] = static_cast<const uint16_t*>(w.values.data) + (r0 + std::min(k, count - 1)) * w.values.stride;
                for (int64_t t = 0; t < n; ++t) {
                    float acc[4];
                    dot_bf16_x4(frow(x, t), rows, in, acc);
                    for (int64_t k = 0; k < count; ++k) store(t, r0 + k, acc[k]);
                }
            }
        });
        return;
    }
    // Blocks of 16 weight rows, converted to fp32 once and used for every token, four tokens
    // by two rows at a time.
    constexpr int64_t kRows = 16;
    ThreadPool::shared().parallel_for(std::size_t((out_rows + kRows - 1) / kRows), grain_for(std::size_t(in * n * kRows)),
                                      [&](std::size_t bb, std::size_t be) {
        std::vector<float> scratch(std::size_t(in * kRows));
        for (std::size_t blk = bb; blk < be; ++blk) {
            const int64_t r0 = int64_t(blk) * kRows, count = std::min<int64_t>(kRows, out_rows - r0);
            const float* rows[kRows];
            for (int64_t k = 0; k < count; ++k) rows[k] = weight_row_f32(w, r0 + k, scratch.data() + k * in);
            for (int64_t t0 = 0; t0 < n; t0 += 4) {
                const int64_t tokens = std::min<int64_t>(4, n - t0);
                const float* xs[4];
                for (int64_t a = 0; a < 4; ++a) xs[a] = frow(x, t0 + std::min(a, tokens - 1));
                for (int64_t k = 0; k < count; k += 2) {
                    float acc[8];
                    dot_4x2(xs, rows[k], rows[std::min(k + 1, count - 1)], in, acc);
                    for (int64_t a = 0; a < tokens; ++a) {
                        store(t0 + a, r0 + k, acc[2 * a]);
                        if (k + 1 < count) store(t0 + a, r0 + k + 1, acc[2 * a + 1]);
                    }
                }
            }
        }
    });
}

}  // namespace lumen::cpu
