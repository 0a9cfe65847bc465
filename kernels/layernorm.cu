// LayerNorm over rows of C; mean and rstd saved in f32.
//
// Row groups (C ≤ 8192): a group of `tpr` threads (a multiple of 32) takes a
// row, each thread holding up to 8 of its elements in registers, so x (and dy)
// is read from global memory once. Thread t of a group owns the vectors
// t + k·tpr (k < 8 / W) of W elements: 16-byte loads when W > 1 (C a multiple
// of W, every operand 16-byte aligned: the host checks), one element when
// W = 1. A block is several groups; sums over a row are warp shuffles, then the
// group's warps added in order through shared memory, so results do not depend
// on timing. Wider rows take the block-per-row kernels at the end of the file.
// The row groups' loads, stores and sums are in common.cuh, shared with
// rmsnorm.cu.

// Group g of block b normalises row b·G + g; y may be of a narrower type TY.
template <typename T, typename TY, int W>
__device__ void ln_forward_rows(const T* x, const T* w, const T* b, TY* y, float* mean, float* rstd,
                                unsigned rows, unsigned c, unsigned tpr, float eps) {
    unsigned g = threadIdx.x / tpr, t = threadIdx.x % tpr;
    unsigned r = blockIdx.x * (blockDim.x / tpr) + g;
    bool live = r < rows;
    float v[8];
    if (live) load_row<T, W>(x + (u64)r * c, c, tpr, t, v);
    else for (int e = 0; e < 8; e++) v[e] = 0.0f;
    float s = 0.0f;
    for (int e = 0; e < 8; e++) s += v[e];
    float mu = group_sum2(s, 0.0f, tpr, 0).a / c;
    float d = 0.0f;
#pragma unroll
    for (int k = 0; k < 8 / W; k++)
        if ((t + k * tpr) * W < c)
            for (int e = 0; e < W; e++) { float z = v[k * W + e] - mu; d += z * z; }
    float rs = rsqrtf(group_sum2(d, 0.0f, tpr, 1).a / c + eps);
    if (!live) return;
    float wv[8], bv[8];
    load_row<T, W>(w, c, tpr, t, wv);
    load_row<T, W>(b, c, tpr, t, bv);
    for (int e = 0; e < 8; e++) v[e] = (v[e] - mu) * rs * wv[e] + bv[e];
    store_row<TY, W>(y + (u64)r * c, c, tpr, t, v);
    if (t == 0) { mean[r] = mu; rstd[r] = rs; }
}

// One pass over dy and x: block b takes rows [b·rpb, (b + 1)·rpb), its G groups
// a row each at a time (rpb a multiple of G). Each row's dx is written at once;
// each thread adds its columns' dw, db terms in row order in registers, then
// the groups add theirs in group order, giving the block's f32 partials [2][C]
// at partial + b·2C, which the finish kernel adds in block order. dy may be of
// a narrower type TD.
template <typename TD, typename T, int W>
__device__ void ln_backward_rows(const TD* dy, const T* x, const T* w, const float* mean,
                                 const float* rstd, T* dx, float* partial, unsigned rows,
                                 unsigned c, unsigned tpr, unsigned rpb) {
    unsigned G = blockDim.x / tpr, g = threadIdx.x / tpr, t = threadIdx.x % tpr;
    unsigned r0 = blockIdx.x * rpb, r1 = r0 + rpb < rows ? r0 + rpb : rows;
    float wv[8], gw[8], gb[8];
    load_row<T, W>(w, c, tpr, t, wv);
    for (int e = 0; e < 8; e++) { gw[e] = 0.0f; gb[e] = 0.0f; }
    for (unsigned it = 0; r0 + it * G < r1; it++) {
        unsigned r = r0 + it * G + g;
        bool live = r < r1;
        float xv[8], dv[8], mu = 0.0f, rs = 0.0f;
        if (live) {
            load_row<T, W>(x + (u64)r * c, c, tpr, t, xv);
            load_row<TD, W>(dy + (u64)r * c, c, tpr, t, dv);
            mu = mean[r]; rs = rstd[r];
        } else {
            for (int e = 0; e < 8; e++) { xv[e] = 0.0f; dv[e] = 0.0f; }
        }
        // Past the row's end dy is 0, so those elements add nothing.
        float a = 0.0f, bb = 0.0f;
        for (int e = 0; e < 8; e++) {
            xv[e] = (xv[e] - mu) * rs;  // normalised x
            float dn = wv[e] * dv[e];
            a += dn; bb += dn * xv[e];
        }
        Sum2 s = group_sum2(a, bb, tpr, it & 1);
        float dm = s.a / c, dnm = s.b / c, o[8];
        for (int e = 0; e < 8; e++) {
            o[e] = (wv[e] * dv[e] - dm - xv[e] * dnm) * rs;
            gw[e] += xv[e] * dv[e]; gb[e] += dv[e];
        }
        if (live) store_row<T, W>(dx + (u64)r * c, c, tpr, t, o);
    }
    // The groups' sums, added in group order in shared memory 2048 columns at
    // a time (a whole vector always falls in one chunk: 2048 is a multiple of W).
    __shared__ float comb[2][2048];
    float* pw = partial + (u64)blockIdx.x * 2 * c;
    for (unsigned c0 = 0; c0 < c; c0 += 2048) {
        for (unsigned q = 0; q < G; q++) {
            if (g == q) {
#pragma unroll
                for (int k = 0; k < 8 / W; k++) {
                    unsigned col = (t + k * tpr) * W;
                    if (col < c0 || col >= c0 + 2048 || col >= c) continue;
                    for (int e = 0; e < W; e++) {
                        unsigned i = col - c0 + e;
                        comb[0][i] = (q ? comb[0][i] : 0.0f) + gw[k * W + e];
                        comb[1][i] = (q ? comb[1][i] : 0.0f) + gb[k * W + e];
                    }
                }
            }
            __syncthreads();  // group q's sums seen by group q + 1
        }
        unsigned len = c - c0 < 2048 ? c - c0 : 2048;
        for (unsigned i = threadIdx.x; i < len; i += blockDim.x) {
            pw[c0 + i] = comb[0][i];
            pw[c + c0 + i] = comb[1][i];
        }
        __syncthreads();  // written out before the next chunk reuses comb
    }
}

// Rows wider than 8192: one block of 256 threads per row, reading x three times.
template <typename T, typename TY>
__device__ void ln_forward_wide(const T* x, const T* w, const T* b, TY* y, float* mean, float* rstd,
                                u64 c, float eps) {
    u64 r = blockIdx.x; const T* xr = x + r * c; TY* yr = y + r * c;
    float s = 0.0f;
    for (u64 j = threadIdx.x; j < c; j += 256) s += ld(xr, j);
    float mu = block_sum_256(s) / c;
    float v = 0.0f;
    for (u64 j = threadIdx.x; j < c; j += 256) { float d = ld(xr, j) - mu; v += d * d; }
    float rs = rsqrtf(block_sum_256(v) / c + eps);
    for (u64 j = threadIdx.x; j < c; j += 256) st(yr, j, (ld(xr, j) - mu) * rs * ld(w, j) + ld(b, j));
    if (threadIdx.x == 0) { mean[r] = mu; rstd[r] = rs; }
}

template <typename TD, typename T>
__device__ void ln_backward_dx_wide(const TD* dy, const T* x, const T* w, const float* mean,
                                    const float* rstd, T* dx, u64 c) {
    u64 r = blockIdx.x; float mu = mean[r], rs = rstd[r];
    float a = 0.0f, bb = 0.0f;
    for (u64 j = threadIdx.x; j < c; j += 256) {
        float nrm = (ld(x, r * c + j) - mu) * rs; float dn = ld(w, j) * ld(dy, r * c + j);
        a += dn; bb += dn * nrm;
    }
    float dm = block_sum_256(a) / c, dnm = block_sum_256(bb) / c;
    for (u64 j = threadIdx.x; j < c; j += 256) {
        float nrm = (ld(x, r * c + j) - mu) * rs; float dn = ld(w, j) * ld(dy, r * c + j);
        st(dx, r * c + j, (dn - dm - nrm * dnm) * rs);
    }
}

// dw, db of wide rows in two deterministic stages, as reduce.cu's sums: thread
// (j, ch) adds rows of chunk ch in order into f32 partials [chunks][2][C].
template <typename TD, typename T>
__device__ void ln_backward_dwdb_wide(const TD* dy, const T* x, const float* mean, const float* rstd,
                                      float* partial, u64 rows, u64 c, u64 chunks) {
    u64 k = tid(); if (k >= c * chunks) return;
    u64 j = k % c, ch = k / c, r1 = (ch + 1) * rows / chunks;
    float gw = 0.0f, gb = 0.0f;
    for (u64 r = ch * rows / chunks; r < r1; r++) {
        float g = ld(dy, r * c + j);
        gw += (ld(x, r * c + j) - mean[r]) * rstd[r] * g; gb += g;
    }
    partial[ch * 2 * c + j] = gw; partial[ch * 2 * c + c + j] = gb;
}

// Each column adds the partials [chunks][2][C] of either backward in order.
template <typename T>
__device__ void ln_backward_dwdb_finish(const float* partial, T* dw, T* db, u64 c, u64 chunks) {
    u64 j = tid(); if (j >= c) return;
    float gw = 0.0f, gb = 0.0f;
    for (u64 ch = 0; ch < chunks; ch++) { gw += partial[ch * 2 * c + j]; gb += partial[ch * 2 * c + c + j]; }
    st(dw, j, gw); st(db, j, gb);
}

// The kernels of one storage type S (every tensor T but the f32 statistics),
// and the mixed ones named mixed_S: x, w, b (and dx, dw, db) f32 with y (and
// dy) of the low type S.
#define LAYERNORM(S, T)                                                                            \
extern "C" __global__ void layernorm_forward_rows_vec_##S(const T* x, const T* w, const T* b,      \
        T* y, float* mean, float* rstd, unsigned rows, unsigned c, unsigned tpr, float eps) {      \
    ln_forward_rows<T, T, 16 / sizeof(T)>(x, w, b, y, mean, rstd, rows, c, tpr, eps);              \
}                                                                                                  \
extern "C" __global__ void layernorm_forward_rows_##S(const T* x, const T* w, const T* b, T* y,    \
        float* mean, float* rstd, unsigned rows, unsigned c, unsigned tpr, float eps) {            \
    ln_forward_rows<T, T, 1>(x, w, b, y, mean, rstd, rows, c, tpr, eps);                           \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_rows_vec_##S(const T* dy, const T* x, const T* w,    \
        const float* mean, const float* rstd, T* dx, float* partial, unsigned rows, unsigned c,    \
        unsigned tpr, unsigned rpb) {                                                              \
    ln_backward_rows<T, T, 16 / sizeof(T)>(dy, x, w, mean, rstd, dx, partial, rows, c, tpr, rpb);  \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_rows_##S(const T* dy, const T* x, const T* w,        \
        const float* mean, const float* rstd, T* dx, float* partial, unsigned rows, unsigned c,    \
        unsigned tpr, unsigned rpb) {                                                              \
    ln_backward_rows<T, T, 1>(dy, x, w, mean, rstd, dx, partial, rows, c, tpr, rpb);               \
}                                                                                                  \
extern "C" __global__ void layernorm_forward_##S(const T* x, const T* w, const T* b, T* y,         \
                                                  float* mean, float* rstd, u64 c, float eps) {    \
    ln_forward_wide<T, T>(x, w, b, y, mean, rstd, c, eps);                                         \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_dx_##S(const T* dy, const T* x, const T* w,          \
        const float* mean, const float* rstd, T* dx, u64 c) {                                      \
    ln_backward_dx_wide<T, T>(dy, x, w, mean, rstd, dx, c);                                        \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_dwdb_##S(const T* dy, const T* x, const float* mean, \
        const float* rstd, float* partial, u64 rows, u64 c, u64 chunks) {                          \
    ln_backward_dwdb_wide<T, T>(dy, x, mean, rstd, partial, rows, c, chunks);                      \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_dwdb_finish_##S(const float* partial, T* dw, T* db,  \
                                                               u64 c, u64 chunks) {                \
    ln_backward_dwdb_finish<T>(partial, dw, db, c, chunks);                                        \
}

FOR_EACH_DTYPE(LAYERNORM)

// f32's vector width, 4, sets the mixed kernels' (8-byte loads and stores of TY).
#define LAYERNORM_MIXED(S, TY)                                                                     \
extern "C" __global__ void layernorm_forward_rows_vec_mixed_##S(const float* x, const float* w, const float* b, \
        TY* y, float* mean, float* rstd, unsigned rows, unsigned c, unsigned tpr, float eps) {     \
    ln_forward_rows<float, TY, 4>(x, w, b, y, mean, rstd, rows, c, tpr, eps);                      \
}                                                                                                  \
extern "C" __global__ void layernorm_forward_rows_mixed_##S(const float* x, const float* w, const float* b, TY* y, \
        float* mean, float* rstd, unsigned rows, unsigned c, unsigned tpr, float eps) {            \
    ln_forward_rows<float, TY, 1>(x, w, b, y, mean, rstd, rows, c, tpr, eps);                      \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_rows_vec_mixed_##S(const TY* dy, const float* x, const float* w, \
        const float* mean, const float* rstd, float* dx, float* partial, unsigned rows, unsigned c, \
        unsigned tpr, unsigned rpb) {                                                              \
    ln_backward_rows<TY, float, 4>(dy, x, w, mean, rstd, dx, partial, rows, c, tpr, rpb);          \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_rows_mixed_##S(const TY* dy, const float* x, const float* w, \
        const float* mean, const float* rstd, float* dx, float* partial, unsigned rows, unsigned c, \
        unsigned tpr, unsigned rpb) {                                                              \
    ln_backward_rows<TY, float, 1>(dy, x, w, mean, rstd, dx, partial, rows, c, tpr, rpb);          \
}                                                                                                  \
extern "C" __global__ void layernorm_forward_mixed_##S(const float* x, const float* w, const float* b, TY* y, \
                                                  float* mean, float* rstd, u64 c, float eps) {    \
    ln_forward_wide<float, TY>(x, w, b, y, mean, rstd, c, eps);                                    \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_dx_mixed_##S(const TY* dy, const float* x, const float* w, \
        const float* mean, const float* rstd, float* dx, u64 c) {                                  \
    ln_backward_dx_wide<TY, float>(dy, x, w, mean, rstd, dx, c);                                   \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_dwdb_mixed_##S(const TY* dy, const float* x, const float* mean, \
        const float* rstd, float* partial, u64 rows, u64 c, u64 chunks) {                          \
    ln_backward_dwdb_wide<TY, float>(dy, x, mean, rstd, partial, rows, c, chunks);                 \
}                                                                                                  \
extern "C" __global__ void layernorm_backward_dwdb_finish_mixed_##S(const float* partial, float* dw, float* db, \
                                                               u64 c, u64 chunks) {                \
    ln_backward_dwdb_finish<float>(partial, dw, db, c, chunks);                                    \
}

LAYERNORM_MIXED(f16, __half)
LAYERNORM_MIXED(bf16, __nv_bfloat16)
