#include "engine/model/awq.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/util/error.h"
#include "engine/util/thread_pool.h"

namespace lumen {
namespace {

HostWeight f32_weight(const std::vector<float>& w, int64_t rows, int64_t cols) {
    HostWeight h;
    h.rows = rows, h.cols = cols, h.dtype = DType::F32;
    h.mapped = reinterpret_cast<const std::byte*>(w.data());
    return h;
}

// Σ over sample rows and output rows of (x · (w - v)ᵀ)², the products done by `backend`.
double product_error(Backend& backend, const std::vector<float>& w, const std::vector<float>& v, int64_t rows, int64_t cols,
                     const std::vector<float>& x, int64_t n) {
    std::vector<float> delta(w.size()), out(std::size_t(n * rows));
    for (std::size_t i = 0; i < w.size(); ++i) delta[i] = w[i] - v[i];
    backend.linear(Tensor{const_cast<float*>(x.data()), DType::F32, n, cols, cols}, Weight::dense(Tensor{delta.data(), DType::F32, rows, cols, cols}),
                   Epilogue::plain(), Tensor{out.data(), DType::F32, n, rows, rows});
    double sum = 0;
    for (float e : out) sum += double(e) * double(e);
    return sum;
}

}  // namespace

void InputStats::add(const float* x, int64_t rows_in, int64_t stride, int64_t max_samples) {
    const int64_t c = channels();
    for (int64_t r = 0; r < rows_in; ++r) {
        const float* row = x + r * c;
        for (int64_t k = 0; k < c; ++k) abs_sum[std::size_t(k)] += std::fabs(double(row[k]));
        if ((rows + r) % stride == 0 && sample_rows < max_samples) {
            samples.insert(samples.end(), row, row + c);
            ++sample_rows;
        }
    }
    rows += rows_in;
}

std::vector<float> awq_search_scales(Backend& backend, const std::vector<float>& w, int64_t rows, int64_t cols, const InputStats& x,
                                     int32_t group_size, int grid) {
    if (x.channels() != cols || x.rows == 0 || cols % group_size != 0) throw Error("AWQ: the calibration statistics do not match the weight");
    // Mean |x| per channel, and mean |w| per input channel with each group scaled to its largest value.
    std::vector<double> x_mean(static_cast<std::size_t>(cols)), w_mean(static_cast<std::size_t>(cols), 0.0);
    for (int64_t c = 0; c < cols; ++c) x_mean[std::size_t(c)] = x.abs_sum[std::size_t(c)] / double(x.rows);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < cols; g += group_size) {
            const float* v = w.data() + r * cols + g;
            float peak = 0;
            for (int64_t k = 0; k < group_size; ++k) peak = std::max(peak, std::fabs(v[k]));
            if (peak > 0)
                for (int64_t k = 0; k < group_size; ++k) w_mean[std::size_t(g + k)] += std::fabs(v[k]) / peak;
        }
    for (auto& m : w_mean) m /= double(rows);

    // Q(w·diag(s))·diag(s)⁻¹ for scales s.
    auto fake_quantized = [&](const std::vector<float>& s) {
        std::vector<float> scaled(w.size());
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) scaled[std::size_t(r * cols + c)] = w[std::size_t(r * cols + c)] * s[std::size_t(c)];
        std::vector<float> back = dequantize(quantize_int4(f32_weight(scaled, rows, cols), group_size));
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) back[std::size_t(r * cols + c)] /= s[std::size_t(c)];
        return back;
    };
    std::vector<float> best(std::size_t(cols), 1.0f);
    double best_error = product_error(backend, w, fake_quantized(best), rows, cols, x.samples, x.sample_rows);
    for (int i = 0; i < grid; ++i) {
        const double a = double(i) / grid;
        std::vector<float> s(static_cast<std::size_t>(cols));
        double lo = std::numeric_limits<double>::max(), hi = 0;
        for (int64_t c = 0; c < cols; ++c) {
            const double v = std::max(std::pow(x_mean[std::size_t(c)], a) / std::pow(std::max(w_mean[std::size_t(c)], 1e-8), 1 - a), 1e-4);
            s[std::size_t(c)] = float(v);
            lo = std::min(lo, v), hi = std::max(hi, v);
        }
        const float norm = float(1.0 / std::sqrt(lo * hi));
        for (auto& v : s) v *= norm;
        const double error = product_error(backend, w, fake_quantized(s), rows, cols, x.samples, x.sample_rows);
        if (error < best_error) best_error = error, best = s;
    }
    return best;
}

void awq_clip(std::vector<float>& w, int64_t rows, int64_t cols, const InputStats& x, const std::vector<float>& x_scale, int32_t group_size) {
    const int64_t n = std::min<int64_t>(x.sample_rows, 64);
    std::vector<float> xs(std::size_t(n * cols));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < cols; ++c) xs[std::size_t(i * cols + c)] = x.samples[std::size_t(i * cols + c)] / x_scale[std::size_t(c)];
    constexpr int kSteps = 10;
    ThreadPool::shared().parallel_for(std::size_t(rows), 4, [&](std::size_t begin, std::size_t end) {
        std::vector<float> clipped(static_cast<std::size_t>(group_size));
        for (int64_t r = int64_t(begin); r < int64_t(end); ++r)
            for (int64_t g = 0; g < cols; g += group_size) {
                float* v = w.data() + r * cols + g;
                float peak = 0;
                for (int64_t k = 0; k < group_size; ++k) peak = std::max(peak, std::fabs(v[k]));
                if (peak == 0) continue;
                double best_error = std::numeric_limits<double>::max();
                float best_limit = peak;
                for (int step = 0; step < kSteps; ++step) {
                    const float limit = peak * (1.0f - 0.05f * float(step));
                    float lo = std::numeric_limits<float>::max(), hi = std::numeric_limits<float>::lowest();
                    for (int64_t k = 0; k < group_size; ++k) {
                        clipped[std::size_t(k)] = std::clamp(v[k], -limit, limit);
                        lo = std::min(lo, clipped[std::size_t(k)]), hi = std::max(hi, clipped[std::size_t(k)]);
                    }
                    // Round to nearest as quantize_int4 does it.
                    const float scale = f16_to_f32(f32_to_f16(std::max(hi - lo, 1e-5f) / 15.0f));
                    const float zero = std::clamp(std::nearbyint(-lo / scale), 0.0f, 15.0f);
                    double error = 0;
                    for (int64_t i = 0; i < n; ++i) {
                        double dot = 0;
                        for (int64_t k = 0; k < group_size; ++k) {
                            const float q = (std::clamp(std::nearbyint(clipped[std::size_t(k)] / scale) + zero, 0.0f, 15.0f) - zero) * scale;
                            dot += double(xs[std::size_t(i * cols + g + k)]) * double(v[k] - q);
                        }
                        error += dot * dot;
                    }
                    if (error < best_error) best_error = error, best_limit = limit;
                }
                for (int64_t k = 0; k < group_size; ++k) v[k] = std::clamp(v[k], -best_limit, best_limit);
            }
    });
}

AwqTensors pack_awq_gemm(const HostWeight& w) {
    if (w.format != Weight::Format::Int4 || !w.input_order.empty() || w.rows % 8 != 0)
        throw Error("AWQ: only 4-bit weights in input order with outputs in eights pack into AutoAWQ's layout");
    constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    AwqTensors t;
    t.in = w.cols, t.out = w.rows, t.groups = w.cols / w.group_size;
    const int64_t words = t.out / 8;
    t.qweight.assign(std::size_t(t.in * words), 0);
    t.qzeros.assign(std::size_t(t.groups * words), 0);
    t.scales.resize(std::size_t(t.groups * t.out));
    const uint32_t* codes = reinterpret_cast<const uint32_t*>(w.values.data());
    const float* scales = reinterpret_cast<const float*>(w.scales.data());
    ThreadPool::shared().parallel_for(std::size_t(words), 1, [&](std::size_t begin, std::size_t end) {
        for (int64_t c = int64_t(begin); c < int64_t(end); ++c)
            for (int i = 0; i < 8; ++i) {
                const int64_t o = 8 * c + kOrder[i];
                for (int64_t k = 0; k < t.in; ++k)
                    t.qweight[std::size_t(k * words + c)] |= ((codes[o * (t.in / 8) + k / 8] >> (4 * (k % 8))) & 15u) << (4 * i);
                for (int64_t g = 0; g < t.groups; ++g) {
                    t.qzeros[std::size_t(g * words + c)] |= uint32_t(w.zeros[std::size_t(o * t.groups + g)]) << (4 * i);
                    t.scales[std::size_t(g * t.out + o)] = f32_to_f16(scales[o * t.groups + g]);
                }
            }
    });
    return t;
}

}  // namespace lumen
