#pragma once
// Matrix products for prompts and images through cuBLASLt, the bias fused into the epilogue.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "kernels/ops.h"

typedef struct cublasLtContext* cublasLtHandle_t;

namespace lumen::cuda {

class Gemm {
public:
    // `workspace` (device memory) may be used by any product on `stream`.
    Gemm(cudaStream_t stream, void* workspace, std::size_t workspace_bytes);
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    // out[n, out_features] = x[n, in] · w[out_features, in]ᵀ (+ bias, which has out's type) with
    // fp32 accumulation; x and w are t, out is t or F32. With `accumulate` the product is added to out.
    void run(DataType t, const void* x, int64_t n, int64_t in, const void* w, int64_t out_features, const void* bias, void* out,
             DataType out_type, bool accumulate = false);
    // The same with FP8 E4M3 operands on compute capability 8.9+: out = (x_scale[i] · w_scale[o]) ·
    // Σ x8[i, k] · w8[o, k] (+ bias), the scales fp32 per row of x and per output channel, out (and
    // the bias) of type t (F16 or BF16). Returns false, doing nothing, where cuBLASLt offers no
    // algorithm (then expand the weights and use run).
    bool run_fp8(DataType t, const void* x8, const float* x_scales, int64_t n, int64_t in, const void* w8, const float* w_scales,
                 int64_t out_features, const void* bias, void* out);

private:
    struct Plan;
    // (type, output type, n, in, out_features, bias, alignment of the pointers in bytes, FP8 operands)
    using Key = std::tuple<int, int, int64_t, int64_t, int64_t, bool, int, bool>;
    Plan& plan(const Key& key);

    cublasLtHandle_t handle_ = nullptr;
    cudaStream_t stream_;
    void* workspace_;
    std::size_t workspace_bytes_;
    std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace lumen::cuda
