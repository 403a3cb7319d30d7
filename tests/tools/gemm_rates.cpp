// A development tool, not part of the product: what cuBLASLt makes of the InternViT-300M layer
// products at 13 tiles (13,325 rows) in the number formats an encoder could use. Each variant's
// time is the best of the heuristic's first eight algorithms, 50 runs each after 5 warm-ups.
//   build/tests/gemm_rates [rows]
// The inputs are constant bytes: cuBLASLt's time does not depend on the values.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void check(cublasStatus_t s, const char* what) {
    if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": " + cublasLtGetStatusString(s));
}

struct Variant {
    const char* name;
    cudaDataType_t in, out, bias;
    bool accumulate;  // out += product (beta = 1), as a residual stream would be added in the epilogue
    int scale_mode;   // -1: no scales (16 bits); else cublasLtMatmulMatrixScale_t for both inputs
};

const Variant kVariants[] = {
    {"bf16 in, bf16 out", CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, false, -1},
    {"bf16 in, fp32 out += product", CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F, true, -1},
    {"fp8 e4m3 in, per-tensor scales, bf16 out", CUDA_R_8F_E4M3, CUDA_R_16BF, CUDA_R_16BF, false,
     CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F},
    {"fp8 e4m3 in, per-row and per-channel scales, bf16 out", CUDA_R_8F_E4M3, CUDA_R_16BF, CUDA_R_16BF, false,
     CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F},
};

struct Buffers {
    void *w = nullptr, *x = nullptr, *out = nullptr, *bias = nullptr, *scales = nullptr, *workspace = nullptr;
    static constexpr size_t kWorkspace = size_t(32) << 20;
};

// Milliseconds for out[rows, n] = x[rows, k] · w[n, k]ᵀ + bias, or a negative number when
// cuBLASLt has no algorithm for the variant.
double time_product(cublasLtHandle_t lt, const Variant& v, int64_t rows, int64_t n, int64_t k, const Buffers& b) {
    cublasLtMatmulDesc_t op = nullptr;
    check(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose), "TRANSA");
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep), "TRANSB");
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue), "EPILOGUE");
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b.bias, sizeof b.bias), "BIAS_POINTER");
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &v.bias, sizeof v.bias), "BIAS_DATA_TYPE");
    if (v.scale_mode >= 0) {
        const int32_t mode = v.scale_mode;
        for (auto [pointer, which] : {std::pair{CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, CUBLASLT_MATMUL_DESC_A_SCALE_MODE},
                                      std::pair{CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, CUBLASLT_MATMUL_DESC_B_SCALE_MODE}}) {
            check(cublasLtMatmulDescSetAttribute(op, pointer, &b.scales, sizeof b.scales), "SCALE_POINTER");
            check(cublasLtMatmulDescSetAttribute(op, which, &mode, sizeof mode), "SCALE_MODE");
        }
    }
    cublasLtMatrixLayout_t a = nullptr, x = nullptr, out = nullptr;
    check(cublasLtMatrixLayoutCreate(&a, v.in, uint64_t(k), uint64_t(n), k), "layout of w");
    check(cublasLtMatrixLayoutCreate(&x, v.in, uint64_t(k), uint64_t(rows), k), "layout of x");
    check(cublasLtMatrixLayoutCreate(&out, v.out, uint64_t(n), uint64_t(rows), n), "layout of out");
    cublasLtMatmulPreference_t preference = nullptr;
    check(cublasLtMatmulPreferenceCreate(&preference), "preference");
    const uint64_t workspace = Buffers::kWorkspace;
    check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace),
          "workspace");
    cublasLtMatmulHeuristicResult_t found[8] = {};
    int count = 0;
    if (cublasLtMatmulAlgoGetHeuristic(lt, op, a, x, out, out, preference, 8, found, &count) != CUBLAS_STATUS_SUCCESS) count = 0;

    const float alpha = 1.0f, beta = v.accumulate ? 1.0f : 0.0f;
    cudaEvent_t start = nullptr, stop = nullptr;
    check(cudaEventCreate(&start), "event");
    check(cudaEventCreate(&stop), "event");
    double best = -1.0;
    for (int i = 0; i < count; ++i) {
        auto run = [&] {
            return cublasLtMatmul(lt, op, &alpha, b.w, a, b.x, x, &beta, b.out, out, b.out, out, &found[i].algo, b.workspace,
                                  Buffers::kWorkspace, nullptr);
        };
        bool runs = true;
        for (int r = 0; r < 5 && runs; ++r) runs = run() == CUBLAS_STATUS_SUCCESS;
        if (!runs) continue;
        check(cudaEventRecord(start), "record");
        for (int r = 0; r < 50; ++r) check(run(), "cublasLtMatmul");
        check(cudaEventRecord(stop), "record");
        check(cudaEventSynchronize(stop), "synchronize");
        float ms = 0.0f;
        check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
        if (best < 0 || ms / 50 < best) best = ms / 50;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cublasLtMatmulPreferenceDestroy(preference);
    for (auto* l : {a, x, out}) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulDescDestroy(op);
    return best;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 13 * 1025;
        // (output features, input features) of a layer: qkv, attention projection, fc1, fc2.
        const int64_t shapes[4][2] = {{3072, 1024}, {1024, 1024}, {4096, 1024}, {1024, 4096}};
        Buffers b;
        check(cudaMalloc(&b.w, size_t(4096) * 4096 * 2), "cudaMalloc");
        check(cudaMalloc(&b.x, size_t(rows) * 4096 * 2), "cudaMalloc");
        check(cudaMalloc(&b.out, size_t(rows) * 4096 * 4), "cudaMalloc");
        check(cudaMalloc(&b.bias, 4096 * 4), "cudaMalloc");
        check(cudaMalloc(&b.scales, size_t(rows + 4096) * 4), "cudaMalloc");
        check(cudaMalloc(&b.workspace, Buffers::kWorkspace), "cudaMalloc");
        check(cudaMemset(b.w, 0x11, size_t(4096) * 4096 * 2), "cudaMemset");
        check(cudaMemset(b.x, 0x11, size_t(rows) * 4096 * 2), "cudaMemset");
        check(cudaMemset(b.out, 0, size_t(rows) * 4096 * 4), "cudaMemset");
        check(cudaMemset(b.bias, 0, 4096 * 4), "cudaMemset");
        const std::vector<float> scales(size_t(rows + 4096), 0.01f);
        check(cudaMemcpy(b.scales, scales.data(), scales.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
        cudaDeviceProp prop{};
        check(cudaGetDeviceProperties(&prop, 0), "device properties");
        cublasLtHandle_t lt = nullptr;
        check(cublasLtCreate(&lt), "cublasLtCreate");
        std::printf("%s, %lld rows; per product us (TFLOP/s), then one layer and 24 layers\n", prop.name, static_cast<long long>(rows));
        for (const Variant& v : kVariants) {
            std::printf("%-55s", v.name);
            double layer = 0.0;
            bool all = true;
            for (const auto& [n, k] : shapes) {
                const double ms = time_product(lt, v, rows, n, k, b);
                if (ms < 0) {
                    std::printf("  %16s", "no algorithm");
                    all = false;
                    continue;
                }
                layer += ms;
                std::printf("  %6.1f (%5.0f)", ms * 1e3, 2.0 * double(rows) * double(n) * double(k) / ms / 1e9);
            }
            if (all) std::printf("  %6.1f us  %5.2f ms", layer * 1e3, layer * 24);
            std::printf("\n");
        }
        cublasLtDestroy(lt);
        for (void* p : {b.w, b.x, b.out, b.bias, b.scales, b.workspace}) cudaFree(p);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "gemm_rates: %s\n", e.what());
        return 1;
    }
}
