// Matrix products through cuBLASLt: the bias rides in the GEMM's epilogue instead of a pass of
// its own over the output, and each shape's algorithm is looked up once.
#include "engine/util/error.h"
#include "kernels/gemm.h"

#include <cublasLt.h>
#include <algorithm>
#include <string>

namespace lumen::cuda {
namespace {

void check_lt(cublasStatus_t status, const char* what) {
    if (status != CUBLAS_STATUS_SUCCESS)
        throw lumen::Error(std::string("cuBLASLt error in ") + what + ": " + cublasLtGetStatusString(status));
}

cudaDataType_t cuda_type(DataType d) { return d == DataType::F32 ? CUDA_R_32F : d == DataType::F16 ? CUDA_R_16F : CUDA_R_16BF; }

// The largest power of two (up to 256) that divides the address: what cuBLASLt may assume.
int alignment(const void* p) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    int align = 256;
    while (align > 1 && a % uintptr_t(align) != 0) align /= 2;
    return align;
}

}  // namespace

struct Gemm::Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool found = false;
    ~Plan() {
        if (op) cublasLtMatmulDescDestroy(op);
        for (auto* l : {a, b, c})
            if (l) cublasLtMatrixLayoutDestroy(l);
    }
};

Gemm::Gemm(cudaStream_t stream, void* workspace, std::size_t workspace_bytes)
    : stream_(stream), workspace_(workspace), workspace_bytes_(workspace_bytes) {
    check_lt(cublasLtCreate(&handle_), "cublasLtCreate");
}

Gemm::~Gemm() {
    plans_.clear();
    cublasLtDestroy(handle_);
}

Gemm::Plan& Gemm::plan(const Key& key) {
    auto it = plans_.find(key);
    if (it != plans_.end()) return *it->second;
    if (plans_.size() > 512) plans_.clear();  // prompts of ever new lengths: start over rather than grow
    const auto [t, out_type, n, in, out, bias, align, fp8] = key;
    auto p = std::make_unique<Plan>();
    // Row-major out[n, o] = x[n, in] · w[o, in]ᵀ is column-major out[o, n] = wᵀ[o, in] · x[in, n].
    check_lt(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "creating a matmul");
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose), "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep), "TRANSB");
    const cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    check_lt(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue), "EPILOGUE");
    if (fp8) {
        // One fp32 scale per row of op(A) (the weight's output channels) and per column of B (x's rows).
        const cublasLtMatmulMatrixScale_t per_vector = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        check_lt(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &per_vector, sizeof per_vector), "A_SCALE_MODE");
        check_lt(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &per_vector, sizeof per_vector), "B_SCALE_MODE");
        const cudaDataType_t bias_type = cuda_type(DataType(out_type));
        if (bias) check_lt(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type), "BIAS_DATA_TYPE");
    }
    const cudaDataType_t operand = fp8 ? CUDA_R_8F_E4M3 : cuda_type(DataType(t));
    check_lt(cublasLtMatrixLayoutCreate(&p->a, operand, uint64_t(in), uint64_t(out), in), "layout of w");
    check_lt(cublasLtMatrixLayoutCreate(&p->b, operand, uint64_t(in), uint64_t(n), in), "layout of x");
    check_lt(cublasLtMatrixLayoutCreate(&p->c, cuda_type(DataType(out_type)), uint64_t(out), uint64_t(n), out), "layout of out");

    cublasLtMatmulPreference_t preference = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&preference), "creating a preference");
    const uint64_t workspace = workspace_bytes_;
    const uint32_t aligned = uint32_t(align);
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace);
    for (auto attribute : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                           CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
        cublasLtMatmulPreferenceSetAttribute(preference, attribute, &aligned, sizeof aligned);
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->a, p->b, p->c, p->c, preference, 1, &result, &count);
    cublasLtMatmulPreferenceDestroy(preference);
    if (status == CUBLAS_STATUS_SUCCESS && count > 0) {
        p->algo = result.algo;
        p->found = true;
    }
    return *plans_.emplace(key, std::move(p)).first->second;
}

void Gemm::run(DataType t, const void* x, int64_t n, int64_t in, const void* w, int64_t out_features, const void* bias, void* out,
               DataType out_type, bool accumulate) {
    if (n == 0) return;
    int align = std::min(std::min(alignment(x), alignment(w)), alignment(out));
    if (bias) align = std::min(align, alignment(bias));
    // Leading dimensions move the alignment of every later column too.
    const int elem = t == DataType::F32 ? 4 : 2, out_elem = out_type == DataType::F32 ? 4 : 2;
    align = std::min(align, alignment(reinterpret_cast<const void*>(uintptr_t(in * elem))));
    align = std::min(align, alignment(reinterpret_cast<const void*>(uintptr_t(out_features * out_elem))));
    Plan& p = plan({int(t), int(out_type), n, in, out_features, bias != nullptr, align, false});
    if (!p.found)
        throw lumen::Error("cuBLASLt has no algorithm for a " + std::to_string(n) + "x" + std::to_string(in) + " by " +
                                 std::to_string(in) + "x" + std::to_string(out_features) + " product");
    if (bias) check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "BIAS_POINTER");
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    check_lt(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, &p.algo, workspace_, workspace_bytes_,
                            stream_),
             "cublasLtMatmul");
}

bool Gemm::run_fp8(DataType t, const void* x8, const float* x_scales, int64_t n, int64_t in, const void* w8, const float* w_scales,
                   int64_t out_features, const void* bias, void* out) {
    if (n == 0) return true;
    if (t == DataType::F32 || in % 16 != 0) return false;
    int align = std::min(std::min(alignment(x8), alignment(w8)), alignment(out));
    if (bias) align = std::min(align, alignment(bias));
    align = std::min(align, alignment(reinterpret_cast<const void*>(uintptr_t(in))));
    align = std::min(align, alignment(reinterpret_cast<const void*>(uintptr_t(out_features * 2))));
    if (align < 16) return false;
    Plan& p = plan({int(t), int(t), n, in, out_features, bias != nullptr, align, true});
    if (!p.found) return false;
    if (bias) check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "BIAS_POINTER");
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scales, sizeof w_scales), "A_SCALE_POINTER");
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scales, sizeof x_scales), "B_SCALE_POINTER");
    const float alpha = 1.0f, beta = 0.0f;
    check_lt(cublasLtMatmul(handle_, p.op, &alpha, w8, p.a, x8, p.b, &beta, out, p.c, out, p.c, &p.algo, workspace_, workspace_bytes_,
                            stream_),
             "cublasLtMatmul (FP8)");
    return true;
}

}  // namespace lumen::cuda
