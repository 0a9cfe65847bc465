// LayerNorm over rows of C: one block of 256 threads per row; mean and rstd
// saved in f32.
#define LAYERNORM(S, T)                                                                            \
extern "C" __global__ void layernorm_forward_##S(const T* x, const T* w, const T* b, T* y,         \
                                                  float* mean, float* rstd, u64 c, float eps) {    \
    u64 r = blockIdx.x; const T* xr = x + r * c; T* yr = y + r * c;                                \
    float s = 0.0f;                                                                                \
    for (u64 j = threadIdx.x; j < c; j += 256) s += ld(xr, j);                                     \
    float mu = block_sum_256(s) / c;                                                               \
    float v = 0.0f;                                                                                \
    for (u64 j = threadIdx.x; j < c; j += 256) { float d = ld(xr, j) - mu; v += d * d; }           \
    float rs = rsqrtf(block_sum_256(v) / c + eps);                                                 \
    for (u64 j = threadIdx.x; j < c; j += 256) st(yr, j, (ld(xr, j) - mu) * rs * ld(w, j) + ld(b, j)); \
    if (threadIdx.x == 0) { mean[r] = mu; rstd[r] = rs; }                                          \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_dx_##S(const T* dy, const T* x, const T* w,          \
        const float* mean, const float* rstd, T* dx, u64 c) {                                      \
    u64 r = blockIdx.x; float mu = mean[r], rs = rstd[r];                                          \
    float a = 0.0f, bb = 0.0f;                                                                     \
    for (u64 j = threadIdx.x; j < c; j += 256) {                                                   \
        float nrm = (ld(x, r * c + j) - mu) * rs; float dn = ld(w, j) * ld(dy, r * c + j);         \
        a += dn; bb += dn * nrm;                                                                   \
    }                                                                                              \
    float dm = block_sum_256(a) / c, dnm = block_sum_256(bb) / c;                                  \
    for (u64 j = threadIdx.x; j < c; j += 256) {                                                   \
        float nrm = (ld(x, r * c + j) - mu) * rs; float dn = ld(w, j) * ld(dy, r * c + j);         \
        st(dx, r * c + j, (dn - dm - nrm * dnm) * rs);                                             \
    }                                                                                              \
}                                                                                                  \
/* dw, db: one thread per column, rows added in order (deterministic). */                          \
extern "C" __global__ void layernorm_backward_dwdb_##S(const T* dy, const T* x, const float* mean, \
        const float* rstd, T* dw, T* db, u64 rows, u64 c) {                                        \
    u64 j = tid(); if (j >= c) return;                                                             \
    float gw = 0.0f, gb = 0.0f;                                                                    \
    for (u64 r = 0; r < rows; r++) {                                                               \
        float g = ld(dy, r * c + j);                                                               \
        gw += (ld(x, r * c + j) - mean[r]) * rstd[r] * g; gb += g;                                 \
    }                                                                                              \
    st(dw, j, gw); st(db, j, gb);                                                                  \
}
FOR_EACH_DTYPE(LAYERNORM)
