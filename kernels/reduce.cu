// Sum / mean over a set of axes and the adjoint expand, for shapes up to rank 6.
struct Dims6 { u64 d[6]; };

__device__ u64 full_index(u64 o, u64 r, u64 rank, Dims6 dims, unsigned mask) {
    u64 idx = 0, stride = 1;
    for (u64 k = 0; k < rank; k++) {
        u64 ax = rank - 1 - k, d = dims.d[ax], c;
        if ((mask >> ax) & 1) { c = r % d; r /= d; } else { c = o % d; o /= d; }
        idx += c * stride; stride *= d;
    }
    return idx;
}

#define REDUCE(S, T)                                                                               \
/* Two stages, deterministic: thread (o, ch) adds chunk ch of output o's elements */              \
/* in row-major order into an f32 partial; then each output adds its chunks in */                 \
/* order. Chunks give a column sum over many rows (a bias gradient: 768 outputs */                \
/* of 16384 rows) enough threads to fill the GPU. */                                              \
extern "C" __global__ void sum_partial_##S(const T* x, float* partial, u64 n, u64 rank,           \
        Dims6 dims, unsigned mask, u64 count, u64 chunks) {                                        \
    u64 k = tid(); if (k >= n * chunks) return;                                                    \
    u64 o = k % n, ch = k / n, r1 = (ch + 1) * count / chunks;                                     \
    float s = 0.0f;                                                                                \
    for (u64 r = ch * count / chunks; r < r1; r++) s += ld(x, full_index(o, r, rank, dims, mask));\
    partial[k] = s;                                                                                \
}                                                                                                  \
extern "C" __global__ void sum_finish_##S(const float* partial, T* out, u64 n, u64 chunks,       \
                                           float scale) {                                          \
    u64 o = tid(); if (o >= n) return;                                                             \
    float s = 0.0f;                                                                                \
    for (u64 ch = 0; ch < chunks; ch++) s += partial[ch * n + o];                                  \
    st(out, o, s * scale);                                                                         \
}                                                                                                  \
extern "C" __global__ void expand_##S(const T* x, T* out, u64 n, u64 rank, Dims6 dims, unsigned mask) { \
    u64 k = tid(); if (k >= n) return;                                                             \
    u64 rem = k, idx = 0, stride = 1;                                                              \
    for (u64 j = 0; j < rank; j++) {                                                               \
        u64 ax = rank - 1 - j, d = dims.d[ax], c = rem % d; rem /= d;                              \
        if (!((mask >> ax) & 1)) { idx += c * stride; stride *= d; }                               \
    }                                                                                              \
    st(out, k, ld(x, idx));                                                                        \
}
FOR_EACH_DTYPE(REDUCE)
