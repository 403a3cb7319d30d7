#pragma once
// The CPU backend's arithmetic over fp32 rows (weights of any float type converted as they are read).
#include <cstddef>
#include <cstdint>

#include "engine/backend/backend.h"

namespace lumen::cpu {

// Row `r` of a weight as fp32: in place for F32, else converted into `scratch` (cols floats).
const float* row_f32(const Tensor& w, int64_t r, float* scratch);
// Row `r` of an fp32 tensor.
float* frow(const Tensor& t, int64_t r);
float dot(const float* a, const float* b, int64_t n);
float sum(const float* a, int64_t n);
void axpy(float a, const float* x, float* y, int64_t n);  // y += a·x
// out = RMSNorm(x) · w over one row of n values.
void normalize_row(const float* x, const float* w, int64_t n, float eps, float* out);
// Row `r` of a weight of any format as fp32 (in place for dense F32, else into `scratch`).
const float* weight_row_f32(const Weight& w, int64_t r, float* scratch);
// out = x · wᵀ (+ bias: one row of out_features values, empty for none); x and out fp32. Weights
// are converted (or dequantized) 16 rows at a time, each converted row serving every token.
void matmul(const Tensor& x, const Weight& w, const Tensor& bias, Tensor out);

void check_f32(const Tensor& t, const char* what);
// 64 random bits from (seed, index): splitmix64.
uint64_t random_bits(uint64_t seed, uint64_t i);
// A uniform value in [0, 1) from (seed, index): the top 24 of those bits.
float random_unit(uint64_t seed, uint64_t i);
// Rows a thread should take, for items of this many multiply-adds.
std::size_t grain_for(std::size_t work_per_item);

}  // namespace lumen::cpu
