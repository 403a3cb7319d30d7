#pragma once
// The tensor-core product the 16-bit kernels share: mma.sync m16n8k16 with fp32 accumulators
// (flash_attention.cu, w4a16.cu).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace lumen::cuda::detail {

// mma.sync m16n8k16 and cp.async need sm_80; older targets get kernels that trap, which the
// launchers never start (they ask the device first).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define LUMEN_SM80(...) __trap()
#else
#define LUMEN_SM80(...) __VA_ARGS__
#endif
template <class T> struct Mma;
template <> struct Mma<__half> {
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        LUMEN_SM80(asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                       : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                       : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1)));
    }
};
template <> struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        LUMEN_SM80(asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                       : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                       : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1)));
    }
};

}  // namespace lumen::cuda::detail
