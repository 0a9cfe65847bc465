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
/* dw, db in two deterministic stages, as reduce.cu's sums: thread (j, ch) adds */                 \
/* rows of chunk ch in order into f32 partials [chunks][2][C]; then each column */                 \
/* adds its chunks in order. */                                                                    \
extern "C" __global__ void layernorm_backward_dwdb_##S(const T* dy, const T* x, const float* mean, \
        const float* rstd, float* partial, u64 rows, u64 c, u64 chunks) {                          \
    u64 k = tid(); if (k >= c * chunks) return;                                                    \
    u64 j = k % c, ch = k / c, r1 = (ch + 1) * rows / chunks;                                      \
    float gw = 0.0f, gb = 0.0f;                                                                    \
    for (u64 r = ch * rows / chunks; r < r1; r++) {                                                \
        float g = ld(dy, r * c + j);                                                               \
        gw += (ld(x, r * c + j) - mean[r]) * rstd[r] * g; gb += g;                                 \
    }                                                                                              \
    partial[ch * 2 * c + j] = gw; partial[ch * 2 * c + c + j] = gb;                                \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_dwdb_finish_##S(const float* partial, T* dw, T* db,  \
                                                               u64 c, u64 chunks) {                \
    u64 j = tid(); if (j >= c) return;                                                             \
    float gw = 0.0f, gb = 0.0f;                                                                    \
    for (u64 ch = 0; ch < chunks; ch++) { gw += partial[ch * 2 * c + j]; gb += partial[ch * 2 * c + c + j]; } \
    st(dw, j, gw); st(db, j, gb);                                                                  \
}
FOR_EACH_DTYPE(LAYERNORM)
