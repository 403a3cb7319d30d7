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

private:
    struct Plan;
    // (type, output type, n, in, out_features, bias, alignment of the pointers in bytes)
    using Key = std::tuple<int, int, int64_t, int64_t, int64_t, bool, int>;
    Plan& plan(const Key& key);

    cublasLtHandle_t handle_ = nullptr;
    cudaStream_t stream_;
    void* workspace_;
    std::size_t workspace_bytes_;
    std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace lumen::cuda
