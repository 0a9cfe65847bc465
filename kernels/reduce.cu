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
/* One thread per output, reduced elements added in row-major order. */                            \
extern "C" __global__ void sum_##S(const T* x, T* out, u64 n, u64 rank, Dims6 dims, unsigned mask, \
                                    u64 count, float scale) {                                      \
    u64 o = tid(); if (o >= n) return;                                                             \
    float s = 0.0f;                                                                                \
    for (u64 r = 0; r < count; r++) s += ld(x, full_index(o, r, rank, dims, mask));                \
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
