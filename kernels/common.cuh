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

// Row groups, for the row kernels of layernorm.cu and rmsnorm.cu: a group of
// `tpr` threads (a multiple of 32) takes a row of C ≤ 8192, thread t holding
// the vectors t + k·tpr (k < 8 / W) of W elements in registers.
//
// W elements of T moved by one load or store: 16 bytes where every tensor of
// the op has one storage type; 8 for the f16/bf16 side of a mixed op (f32 x
// with low y, or low dy with f32 x), whose f32 side sets W = 4.
template <typename T, int W>
struct alignas(sizeof(T) * W) RowPack {
    T v[W];
};

// The 8 row elements a thread owns (0 past the row's end).
template <typename T, int W>
__device__ __forceinline__ void load_row(const T* p, unsigned c, unsigned tpr, unsigned t,
                                         float (&v)[8]) {
#pragma unroll
    for (int k = 0; k < 8 / W; k++) {
        unsigned col = (t + k * tpr) * W;
        if constexpr (W > 1) {
            if (col < c) {
                RowPack<T, W> q = *reinterpret_cast<const RowPack<T, W>*>(p + col);
#pragma unroll
                for (int e = 0; e < W; e++) v[k * W + e] = ld(q.v, e);
            } else {
#pragma unroll
                for (int e = 0; e < W; e++) v[k * W + e] = 0.0f;
            }
        } else {
            v[k] = col < c ? ld(p, col) : 0.0f;
        }
    }
}

template <typename T, int W>
__device__ __forceinline__ void store_row(T* p, unsigned c, unsigned tpr, unsigned t,
                                          const float (&v)[8]) {
#pragma unroll
    for (int k = 0; k < 8 / W; k++) {
        unsigned col = (t + k * tpr) * W;
        if (col >= c) continue;
        if constexpr (W > 1) {
            RowPack<T, W> q;
#pragma unroll
            for (int e = 0; e < W; e++) st(q.v, e, v[k * W + e]);
            *reinterpret_cast<RowPack<T, W>*>(p + col) = q;
        } else {
            st(p, col, v[k]);
        }
    }
}

struct Sum2 { float a, b; };

// (Σa, Σb) over the tpr threads of the caller's group, the same bits in every
// thread. Every thread of the block calls it together: a group of more than
// one warp goes through shared memory and a block barrier; `parity` alternates
// between consecutive calls so that one barrier a call suffices.
__device__ Sum2 group_sum2(float a, float b, unsigned tpr, unsigned parity) {
    __shared__ float red[2][32][2];  // [parity][warp][a, b]
    for (int m = 16; m > 0; m >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, m);
        b += __shfl_xor_sync(0xffffffffu, b, m);
    }
    Sum2 s; s.a = a; s.b = b;
    if (tpr == 32) return s;
    unsigned w = threadIdx.x / 32;
    if (threadIdx.x % 32 == 0) { red[parity][w][0] = a; red[parity][w][1] = b; }
    __syncthreads();
    unsigned w0 = threadIdx.x / tpr * (tpr / 32);
    s.a = 0.0f; s.b = 0.0f;
    for (unsigned i = 0; i < tpr / 32; i++) { s.a += red[parity][w0 + i][0]; s.b += red[parity][w0 + i][1]; }
    return s;
}
