// Elementwise ops, llm.c style: one thread per element.
// out = a ⊕ b, b repeating with period nb (bias, positions, residual).
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
    u64 i = tid(); if (i >= n) return;                                                             \
    float v = ld(x, i);                                                                            \
    st(out, i, 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v))));           \
}                                                                                                 \
extern "C" __global__ void bias_gelu_forward_##S(const T* x, const T* b, T* out, u64 n, u64 nb) {   \
    u64 i = tid(); if (i >= n) return;                                                             \
    float v = ld(x, i) + ld(b, i % nb);                                                            \
    st(out, i, 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v))));           \
}                                                                                                 \
extern "C" __global__ void bias_gelu_backward_##S(const T* x, const T* b, const T* dy, T* dh,     \
                                                   u64 n, u64 nb) {                                \
    u64 i = tid(); if (i >= n) return;                                                             \
    float v = ld(x, i) + ld(b, i % nb);                                                            \
    float t = tanhf(0.7978845608f * (v + 0.044715f * v * v * v));                                  \
    float local = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * v * v); \
    st(dh, i, local * ld(dy, i));                                                                  \
}                                                                                                 \
extern "C" __global__ void gelu_backward_##S(const T* x, const T* dy, T* dx, u64 n) {             \
    u64 i = tid(); if (i >= n) return;                                                             \
    float v = ld(x, i);                                                                            \
    float t = tanhf(0.7978845608f * (v + 0.044715f * v * v * v));                                  \
    float local = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * v * v); \
    st(dx, i, local * ld(dy, i));                                                                  \
}
FOR_EACH_DTYPE(ELEMENTWISE)
