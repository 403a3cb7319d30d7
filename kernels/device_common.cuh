#pragma once
// Helpers shared by the kernel files: element conversions, type dispatch, block reductions.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <utility>

#include "kernels/ops.h"

namespace lumen::cuda::detail {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
// FP8 E4M3 codes as floats: every code is exact in fp16, and compute capability 8.9+ converts two
// codes with one instruction (older GPUs never run FP8 weights; the conversion is emulated there).
__device__ __forceinline__ float e4m3_to_float(uint8_t code) { return __half2float(__half(__nv_cvt_fp8_to_halfraw(code, __NV_E4M3))); }
__device__ __forceinline__ float2 e4m3x2_to_float2(uint16_t codes) {
    return __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(codes, __NV_E4M3)));
}
template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Two floats as one register of 16-bit values (lo in the low half): a tensor-core operand.
template <class T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
}

// The 32-bit shared-memory address that PTX instructions take.
__device__ __forceinline__ uint32_t shared_address(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// 2^x in one MUFU instruction (exp2f adds a rescue for results below 2^-126, which the
// softmax of attention does not need: such weights are zero to it).
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Calls f(T{}) with the C++ type of `t`.
template <class F>
void dispatch(DataType t, F&& f) {
    switch (t) {
    case DataType::F32: f(float{}); break;
    case DataType::F16: f(__half{}); break;
    case DataType::BF16: f(__nv_bfloat16{}); break;
    }
}

inline void launched(const char* what) { check(cudaGetLastError(), what); }

// Programmatic dependent launch (sm_90+). A kernel started with `launch_early` may begin while the
// kernel before it in the stream is still running: before wait_for_previous() it may only read
// what no kernel writes (weights), and it must call wait_for_previous() before anything else.
// let_next_start() lets the following kernel begin the same way; ours call it first thing, so that
// the next kernel's blocks take SMs as they free up and start loading their weights (a decode
// step is a chain of short kernels, each of which would otherwise start on an idle GPU). Both are
// no-ops for kernels started normally and on older GPUs.
__device__ __forceinline__ void wait_for_previous() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void let_next_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether the current device overlaps kernels this way (compute capability 9.0 or newer, and
// LUMEN_NO_EARLY_LAUNCH unset).
bool early_launch_supported();

// Starts `kernel` so that it may overlap the end of the previous kernel (see wait_for_previous).
template <class... Params, class... Args>
void launch_early(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t s, Args&&... args) {
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = s;
    config.attrs = &attribute;
    config.numAttrs = early_launch_supported() ? 1 : 0;
    check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx");
}

inline unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

// 16 bytes of T at a time: element-wise kernels read and write whole vectors where the shapes let
// them (cols and strides multiples of kVector<T>, 16-byte aligned rows).
template <class T> constexpr int kVector = 16 / sizeof(T);
template <class T>
struct alignas(16) Vector {
    T v[kVector<T>];
};
template <class T>
inline bool vectorizable(const void* p, int64_t cols, int64_t stride) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0 && cols % kVector<T> == 0 && stride % kVector<T> == 0;
}

// Four consecutive values, loaded and stored as one vector.
template <class T>
struct alignas(4 * sizeof(T)) Four {
    T v[4];
};
template <class T>
inline bool fours(const void* p, int64_t cols, int64_t stride) {
    return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0 && cols % 4 == 0 && stride % 4 == 0;
}

// Element-wise kernels over a matrix: x spans the columns, y the rows (a grid-stride loop past
// the grid's limit), so that no thread divides to find its column.
inline dim3 matrix_grid(int64_t rows, int64_t cols, int threads) {
    return dim3(blocks_for(cols, threads), unsigned(rows < 65535 ? rows : 65535));
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// Sum over a block of up to 1024 threads; every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    v = lane < warps ? partial[lane] : 0.0f;
    return warp_sum(v);
}

// Offset of (block, layer, k or v, kv head, slot) in the paged KV pool, in elements.
__device__ __forceinline__ int64_t kv_offset(const KvLayout& kv, int32_t block, int32_t layer, int32_t which, int32_t head,
                                             int32_t slot) {
    return ((((int64_t(block) * kv.num_layers + layer) * 2 + which) * kv.num_kv_heads + head) * kv.block_size + slot) *
           kv.head_dim;
}


constexpr int kMaxHeadDim = 256;  // the largest head the attention and RoPE kernels take

// Eight consecutive elements as floats (16-byte aligned loads).
__device__ __forceinline__ void load8(const float* p, float* out) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}
template <class T>
__device__ __forceinline__ void load8(const T* p, float* out) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* h = reinterpret_cast<const T*>(&raw);
    for (int i = 0; i < 8; ++i) out[i] = to_f(h[i]);
}

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

}  // namespace lumen::cuda::detail
