// Elementwise ops. A second operand b repeats with period nb over the first's
// n elements (a bias, positions, a residual).
//
// The *_vec kernels (n + 16 < 2³², every operand 16-byte aligned: the host
// checks) give each thread the 16 bytes at element i = W·thread, W = 16 /
// sizeof(T): one 128-bit load per full-length operand and one store, 32-bit
// indices, and b's index i mod nb taken once per thread (a 32-bit modulo) and
// stepped from there, as one 16-byte load where those W elements of b are
// contiguous and aligned. The last thread takes the tail (n mod W) one element
// at a time. The plain kernels (one thread per element, 64-bit indices) are the
// fallback.

template <typename T>
__device__ __forceinline__ void load_pack(const T* p, float (&v)[16 / sizeof(T)]) {
    Pack16<T> q = ld16(p);
#pragma unroll
    for (int e = 0; e < (int)(16 / sizeof(T)); e++) v[e] = ld(q.v, e);
}

// out[i] = f(a[i], b[i mod nb], c[i]) for i < n, each operand present or not
// (A, B, C; an absent one reads as 0).
template <typename T, bool A, bool B, bool C, typename F>
__device__ void ew_vec(T* out, unsigned n, const T* a, const T* b, unsigned nb, const T* c, F f) {
    constexpr unsigned W = 16 / sizeof(T);
    unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) * W;
    if (i >= n) return;
    unsigned j = B ? i % nb : 0;
    if (i + W <= n) {
        float va[W] = {}, vb[W] = {}, vc[W] = {};
        if constexpr (A) load_pack(a + i, va);
        if constexpr (C) load_pack(c + i, vc);
        if constexpr (B) {
            if (j % W == 0 && j + W <= nb) {
                load_pack(b + j, vb);
            } else {
#pragma unroll
                for (unsigned e = 0; e < W; e++) { vb[e] = ld(b, j); if (++j == nb) j = 0; }
            }
        }
        Pack16<T> o;
#pragma unroll
        for (unsigned e = 0; e < W; e++) st(o.v, e, f(va[e], vb[e], vc[e]));
        st16(out + i, o);
    } else {
        for (unsigned k = i; k < n; k++) {
            st(out, k, f(A ? ld(a, k) : 0.0f, B ? ld(b, j) : 0.0f, C ? ld(c, k) : 0.0f));
            if (B && ++j == nb) j = 0;
        }
    }
}

// The residual add of a low-precision projection to the f32 stream: out (f32)
// = a (f32) + b (TB = f16/bf16, period nb), b widened as it is read. Laid out
// as ew_vec for f32 (W = 4: 16-byte loads of a, stores of out); b's 4 elements
// one 8-byte load where they are contiguous and aligned.
template <typename TB>
struct alignas(4 * sizeof(TB)) Pack4 {
    TB v[4];
};
template <typename TB>
__device__ void add_mixed_vec(const float* a, const TB* b, float* out, unsigned n, unsigned nb) {
    constexpr unsigned W = 4;
    unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) * W;
    if (i >= n) return;
    unsigned j = i % nb;
    if (i + W <= n) {
        float va[W], vb[W];
        load_pack(a + i, va);
        if (j % W == 0 && j + W <= nb) {
            Pack4<TB> q = *reinterpret_cast<const Pack4<TB>*>(b + j);
#pragma unroll
            for (unsigned e = 0; e < W; e++) vb[e] = ld(q.v, e);
        } else {
#pragma unroll
            for (unsigned e = 0; e < W; e++) { vb[e] = ld(b, j); if (++j == nb) j = 0; }
        }
        Pack16<float> o;
#pragma unroll
        for (unsigned e = 0; e < W; e++) o.v[e] = va[e] + vb[e];
        st16(out + i, o);
    } else {
        for (unsigned k = i; k < n; k++) {
            out[k] = a[k] + ld(b, j);
            if (++j == nb) j = 0;
        }
    }
}

// The mixed add's kernels, named by b's dtype S: f32 a and out.
#define ADD_MIXED(S, T)                                                                           \
extern "C" __global__ void add_mixed_vec_##S(const float* a, const T* b, float* out, unsigned n,  \
                                             unsigned nb) {                                       \
    add_mixed_vec<T>(a, b, out, n, nb);                                                           \
}                                                                                                 \
extern "C" __global__ void add_mixed_##S(const float* a, const T* b, float* out, u64 n, u64 nb) { \
    u64 i = tid(); if (i < n) out[i] = a[i] + ld(b, i % nb);                                       \
}
ADD_MIXED(f16, __half)
ADD_MIXED(bf16, __nv_bfloat16)

__device__ __forceinline__ float gelu(float v) {
    return 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
}
// d gelu(v) / dv, of the same tanh form.
__device__ __forceinline__ float gelu_grad(float v) {
    float t = tanhf(0.7978845608f * (v + 0.044715f * v * v * v));
    return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * v * v);
}
// SiLU, x·σ(x). For very negative v, expf(−v) overflows to inf and both
// forms give (−)0 rather than NaN.
__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }
// d silu(v) / dv = σ(v)·(1 + v·(1 − σ(v))).
__device__ __forceinline__ float silu_grad(float v) {
    float s = 1.0f / (1.0f + expf(-v));
    return s * (1.0f + v * (1.0f - s));
}

#define ELEMENTWISE_VEC(S, T)                                                                     \
extern "C" __global__ void add_vec_##S(const T* a, const T* b, T* out, unsigned n, unsigned nb) { \
    ew_vec<T, true, true, false>(out, n, a, b, nb, nullptr, [](float x, float y, float) { return x + y; }); \
}                                                                                                 \
extern "C" __global__ void mul_vec_##S(const T* a, const T* b, T* out, unsigned n, unsigned nb) { \
    ew_vec<T, true, true, false>(out, n, a, b, nb, nullptr, [](float x, float y, float) { return x * y; }); \
}                                                                                                 \
extern "C" __global__ void scale_vec_##S(const T* a, T* out, unsigned n, float f) {               \
    ew_vec<T, true, false, false>(out, n, a, nullptr, 0, nullptr, [f](float x, float, float) { return x * f; }); \
}                                                                                                 \
extern "C" __global__ void fill_vec_##S(T* out, unsigned n, float v) {                            \
    ew_vec<T, false, false, false>(out, n, nullptr, nullptr, 0, nullptr, [v](float, float, float) { return v; }); \
}                                                                                                 \
extern "C" __global__ void accumulate_vec_##S(T* dst, const T* src, unsigned n) {                 \
    ew_vec<T, true, false, true>(dst, n, dst, nullptr, 0, src, [](float d, float, float s) { return d + s; }); \
}                                                                                                 \
extern "C" __global__ void gelu_forward_vec_##S(const T* x, T* out, unsigned n) {                 \
    ew_vec<T, true, false, false>(out, n, x, nullptr, 0, nullptr, [](float v, float, float) { return gelu(v); }); \
}                                                                                                 \
extern "C" __global__ void bias_gelu_forward_vec_##S(const T* x, const T* b, T* out, unsigned n,  \
                                                      unsigned nb) {                              \
    ew_vec<T, true, true, false>(out, n, x, b, nb, nullptr, [](float v, float bv, float) { return gelu(v + bv); }); \
}                                                                                                 \
extern "C" __global__ void bias_gelu_backward_vec_##S(const T* x, const T* b, const T* dy, T* dh, \
                                                       unsigned n, unsigned nb) {                 \
    ew_vec<T, true, true, true>(dh, n, x, b, nb, dy,                                              \
                                [](float v, float bv, float g) { return gelu_grad(v + bv) * g; });  \
}                                                                                                 \
extern "C" __global__ void gelu_backward_vec_##S(const T* x, const T* dy, T* dx, unsigned n) {    \
    ew_vec<T, true, false, true>(dx, n, x, nullptr, 0, dy, [](float v, float, float g) { return gelu_grad(v) * g; }); \
}                                                                                                 \
extern "C" __global__ void silu_forward_vec_##S(const T* x, T* out, unsigned n) {                 \
    ew_vec<T, true, false, false>(out, n, x, nullptr, 0, nullptr, [](float v, float, float) { return silu(v); }); \
}                                                                                                 \
extern "C" __global__ void silu_backward_vec_##S(const T* x, const T* dy, T* dx, unsigned n) {    \
    ew_vec<T, true, false, true>(dx, n, x, nullptr, 0, dy, [](float v, float, float g) { return silu_grad(v) * g; }); \
}
FOR_EACH_DTYPE(ELEMENTWISE_VEC)

// The fallback: one thread per element, 64-bit indices.
#define ELEMENTWISE(S, T)                                                                         \
extern "C" __global__ void add_##S(const T* a, const T* b, T* out, u64 n, u64 nb) {               \
    u64 i = tid(); if (i < n) st(out, i, ld(a, i) + ld(b, i % nb));                                \
}                                                                                                 \
extern "C" __global__ void mul_##S(const T* a, const T* b, T* out, u64 n, u64 nb) {               \
    u64 i = tid(); if (i < n) st(out, i, ld(a, i) * ld(b, i % nb));                                \
}                                                                                                 \
extern "C" __global__ void scale_##S(const T* a, T* out, u64 n, float f) {                        \
    u64 i = tid(); if (i < n) st(out, i, ld(a, i) * f);                                            \
}                                                                                                 \
extern "C" __global__ void fill_##S(T* out, u64 n, float v) {                                     \
    u64 i = tid(); if (i < n) st(out, i, v);                                                       \
}                                                                                                 \
extern "C" __global__ void accumulate_##S(T* dst, const T* src, u64 n) {                          \
    u64 i = tid(); if (i < n) st(dst, i, ld(dst, i) + ld(src, i));                                 \
}                                                                                                 \
extern "C" __global__ void gelu_forward_##S(const T* x, T* out, u64 n) {                          \
    u64 i = tid(); if (i < n) st(out, i, gelu(ld(x, i)));                                          \
}                                                                                                 \
extern "C" __global__ void bias_gelu_forward_##S(const T* x, const T* b, T* out, u64 n, u64 nb) {   \
    u64 i = tid(); if (i < n) st(out, i, gelu(ld(x, i) + ld(b, i % nb)));                          \
}                                                                                                 \
extern "C" __global__ void bias_gelu_backward_##S(const T* x, const T* b, const T* dy, T* dh,     \
                                                   u64 n, u64 nb) {                                \
    u64 i = tid(); if (i < n) st(dh, i, gelu_grad(ld(x, i) + ld(b, i % nb)) * ld(dy, i));          \
}                                                                                                 \
extern "C" __global__ void gelu_backward_##S(const T* x, const T* dy, T* dx, u64 n) {             \
    u64 i = tid(); if (i < n) st(dx, i, gelu_grad(ld(x, i)) * ld(dy, i));                          \
}                                                                                                 \
extern "C" __global__ void silu_forward_##S(const T* x, T* out, u64 n) {                          \
    u64 i = tid(); if (i < n) st(out, i, silu(ld(x, i)));                                          \
}                                                                                                 \
extern "C" __global__ void silu_backward_##S(const T* x, const T* dy, T* dx, u64 n) {             \
    u64 i = tid(); if (i < n) st(dx, i, silu_grad(ld(x, i)) * ld(dy, i));                          \
}
FOR_EACH_DTYPE(ELEMENTWISE)
