// Prepended to every kernel file. Storage types: float, __half, __nv_bfloat16;
// arithmetic is always f32 (ld widens, st rounds to nearest-even).
// tests/cuda_emu/emu.h stands in for the CUDA headers when kernels run on the
// CPU in tests.
#ifndef HEADROOM_CUDA_EMULATION
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

typedef unsigned long long u64;

// NVRTC compiles without the C math headers.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fc00000)
#endif

__device__ __forceinline__ float ld(const float* p, u64 i) { return p[i]; }
__device__ __forceinline__ float ld(const __half* p, u64 i) { return __half2float(p[i]); }
__device__ __forceinline__ float ld(const __nv_bfloat16* p, u64 i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float* p, u64 i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__half* p, u64 i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void st(__nv_bfloat16* p, u64 i, float v) { p[i] = __float2bfloat16_rn(v); }

__device__ __forceinline__ u64 tid() { return (u64)blockIdx.x * blockDim.x + threadIdx.x; }

// Instantiates M(suffix, type) for every storage type.
#define FOR_EACH_DTYPE(M) M(f32, float) M(f16, __half) M(bf16, __nv_bfloat16)

// Sum of one value per thread across a block of 256, in a fixed order.
__device__ float block_sum_256(float v) {
    __shared__ float part[256];
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    float r = part[0];
    __syncthreads();
    return r;
}

__device__ float block_max_256(float v) {
    __shared__ float part[256];
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] = fmaxf(part[threadIdx.x], part[threadIdx.x + s]);
        __syncthreads();
    }
    float r = part[0];
    __syncthreads();
    return r;
}

// A row's max and Σ exp(x − max), reduced over the block in a fixed order: the
// softmax.cu and cross_entropy.cu kernels share it.
struct RowStats { float max; float sum; };

template <typename T>
__device__ RowStats row_stats(const T* xr, u64 v) {
    float m = -INFINITY;
    for (u64 j = threadIdx.x; j < v; j += 256) m = fmaxf(m, ld(xr, j));
    m = block_max_256(m);
    float s = 0.0f;
    for (u64 j = threadIdx.x; j < v; j += 256) s += expf(ld(xr, j) - m);
    RowStats r; r.max = m; r.sum = block_sum_256(s);
    return r;
}

// 16 bytes of storage type T (4 f32, 8 f16/bf16): one 128-bit load or store
// when the address is 16-byte aligned, which the host's plan checks before it
// picks a kernel that uses them.
template <typename T>
struct __align__(16) Pack16 {
    T v[16 / sizeof(T)];
};
template <typename T>
__device__ __forceinline__ Pack16<T> ld16(const T* p) {
    return *reinterpret_cast<const Pack16<T>*>(p);
}
template <typename T>
__device__ __forceinline__ void st16(T* p, const Pack16<T>& x) {
    *reinterpret_cast<Pack16<T>*>(p) = x;
}
