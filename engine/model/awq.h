#pragma once
// Activation-aware weight quantization (AWQ; Lin et al., 2023), the parts that look at numbers:
// per-input-channel scales searched on calibration activations, group-wise clipping, and AutoAWQ's
// GEMM packing. lumen-cli quantize runs the calibration and writes the folder.
#include <cstdint>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/model/weight_formats.h"

namespace lumen {

// What the calibration text showed at one product input: the mean |x| of each channel, and some
// rows of x to measure the error of a choice on.
struct InputStats {
    std::vector<double> abs_sum;  // per channel
    int64_t rows = 0;             // rows summed
    std::vector<float> samples;   // sample rows, [sample_rows, channels]
    int64_t sample_rows = 0;

    explicit InputStats(int64_t channels = 0) : abs_sum(std::size_t(channels), 0.0) {}
    int64_t channels() const { return int64_t(abs_sum.size()); }
    // Adds the rows of x (fp32 [rows, channels]); keeps every `stride`-th row as a sample, up to `max_samples`.
    void add(const float* x, int64_t rows, int64_t stride, int64_t max_samples);
};

// The per-input-channel scales s for the products `w` ([rows, cols] fp32, the products sharing one
// input stacked) that minimise || x·wᵀ - x·(Q(w·diag(s))·diag(s)⁻¹)ᵀ || on the samples, where Q is
// 4-bit round-to-nearest in groups: s = mean|x|^a / mean|w|^(1-a) over a grid of a, normalised,
// with s = 1 among the candidates. `backend` (a CPU one) does the products.
std::vector<float> awq_search_scales(Backend& backend, const std::vector<float>& w, int64_t rows, int64_t cols, const InputStats& x,
                                     int32_t group_size, int grid = 20);

// Clips each group of each row of `w` to the fraction of its largest magnitude (from 1 down to
// 0.55) that quantizes to the smallest error on the samples of x (divided by `x_scale` per channel,
// the input as the scaled product sees it).
void awq_clip(std::vector<float>& w, int64_t rows, int64_t cols, const InputStats& x, const std::vector<float>& x_scale, int32_t group_size);

// A 4-bit weight (canonical HostWeight) in AutoAWQ's GEMM tensors: qweight [in, out / 8] and qzeros
// [groups, out / 8] int32 with the outputs of a word in the order 0, 2, 4, 6, 1, 3, 5, 7, scales
// [groups, out] fp16.
struct AwqTensors {
    std::vector<uint32_t> qweight, qzeros;
    std::vector<uint16_t> scales;
    int64_t in = 0, out = 0, groups = 0;
};
AwqTensors pack_awq_gemm(const HostWeight& w);

}  // namespace lumen
