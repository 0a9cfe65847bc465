// RMSNorm over rows of C (Llama's norm: no mean taken off, no bias); rstd
// saved in f32. Laid out as layernorm.cu, whose row groups (common.cuh) it
// shares: rows up to 8192 wide are held in registers by a group of `tpr`
// threads, so the forward reads x once and the backward reads dy and x once
// for dx and dw together; wider rows take a block of 256 threads per row.
// Every sum runs in a fixed order (warp shuffles, then warps and groups in
// order, then blocks or chunks in order): no atomics, the same bits every run.

// Group g of block b normalises row b·G + g; y may be of a narrower type TY.
template <typename T, typename TY, int W>
__device__ void rms_forward_rows(const T* x, const T* w, TY* y, float* rstd, unsigned rows,
                                 unsigned c, unsigned tpr, float eps) {
    unsigned g = threadIdx.x / tpr, t = threadIdx.x % tpr;
    unsigned r = blockIdx.x * (blockDim.x / tpr) + g;
    bool live = r < rows;
    float v[8];
    if (live) load_row<T, W>(x + (u64)r * c, c, tpr, t, v);
    else for (int e = 0; e < 8; e++) v[e] = 0.0f;
    float s = 0.0f;
    for (int e = 0; e < 8; e++) s += v[e] * v[e];
    // Dead groups still take part: the sum may cross warps through a barrier.
    float rs = rsqrtf(group_sum2(s, 0.0f, tpr, 0).a / c + eps);
    if (!live) return;
    float wv[8];
    load_row<T, W>(w, c, tpr, t, wv);
    for (int e = 0; e < 8; e++) v[e] = v[e] * rs * wv[e];
    store_row<TY, W>(y + (u64)r * c, c, tpr, t, v);
    if (t == 0) rstd[r] = rs;
}

// One pass over dy and x: block b takes rows [b·rpb, (b + 1)·rpb), its G groups
// a row each at a time (rpb a multiple of G). With n = x·rstd and g = w·dy,
// dx = rstd·(g − n·mean(g·n)) is written per row; each thread adds its
// columns' dw = Σ n·dy in row order in registers, then the groups add theirs
// in group order into the block's f32 partials [C] at partial + b·C, which the
// finish kernel adds in block order. dy may be of a narrower type TD.
template <typename TD, typename T, int W>
__device__ void rms_backward_rows(const TD* dy, const T* x, const T* w, const float* rstd, T* dx,
                                  float* partial, unsigned rows, unsigned c, unsigned tpr,
                                  unsigned rpb) {
    unsigned G = blockDim.x / tpr, g = threadIdx.x / tpr, t = threadIdx.x % tpr;
    unsigned r0 = blockIdx.x * rpb, r1 = r0 + rpb < rows ? r0 + rpb : rows;
    float wv[8], gw[8];
    load_row<T, W>(w, c, tpr, t, wv);
    for (int e = 0; e < 8; e++) gw[e] = 0.0f;
    for (unsigned it = 0; r0 + it * G < r1; it++) {
        unsigned r = r0 + it * G + g;
        bool live = r < r1;
        float xv[8], dv[8], rs = 0.0f;
        if (live) {
            load_row<T, W>(x + (u64)r * c, c, tpr, t, xv);
            load_row<TD, W>(dy + (u64)r * c, c, tpr, t, dv);
            rs = rstd[r];
        } else {
            for (int e = 0; e < 8; e++) { xv[e] = 0.0f; dv[e] = 0.0f; }
        }
        // Past the row's end dy is 0, so those elements add nothing.
        float a = 0.0f;
        for (int e = 0; e < 8; e++) {
            xv[e] = xv[e] * rs;
            a += wv[e] * dv[e] * xv[e];
        }
        float gn = group_sum2(a, 0.0f, tpr, it & 1).a / c, o[8];
        for (int e = 0; e < 8; e++) {
            o[e] = (wv[e] * dv[e] - xv[e] * gn) * rs;
            gw[e] += xv[e] * dv[e];
        }
        if (live) store_row<T, W>(dx + (u64)r * c, c, tpr, t, o);
    }
    // The groups' sums, added in group order in shared memory 2048 columns at
    // a time (a whole vector always falls in one chunk: 2048 is a multiple of W).
    __shared__ float comb[2048];
    float* pw = partial + (u64)blockIdx.x * c;
    for (unsigned c0 = 0; c0 < c; c0 += 2048) {
        for (unsigned q = 0; q < G; q++) {
            if (g == q) {
#pragma unroll
                for (int k = 0; k < 8 / W; k++) {
                    unsigned col = (t + k * tpr) * W;
                    if (col < c0 || col >= c0 + 2048 || col >= c) continue;
                    for (int e = 0; e < W; e++) {
                        unsigned i = col - c0 + e;
                        comb[i] = (q ? comb[i] : 0.0f) + gw[k * W + e];
                    }
                }
            }
            __syncthreads();  // group q's sums seen by group q + 1
        }
        unsigned len = c - c0 < 2048 ? c - c0 : 2048;
        for (unsigned i = threadIdx.x; i < len; i += blockDim.x) pw[c0 + i] = comb[i];
        __syncthreads();  // written out before the next chunk reuses comb
    }
}

// Rows wider than 8192: one block of 256 threads per row, reading x twice.
template <typename T, typename TY>
__device__ void rms_forward_wide(const T* x, const T* w, TY* y, float* rstd, u64 c, float eps) {
    u64 r = blockIdx.x; const T* xr = x + r * c; TY* yr = y + r * c;
    float s = 0.0f;
    for (u64 j = threadIdx.x; j < c; j += 256) { float v = ld(xr, j); s += v * v; }
    float rs = rsqrtf(block_sum_256(s) / c + eps);
    for (u64 j = threadIdx.x; j < c; j += 256) st(yr, j, ld(xr, j) * rs * ld(w, j));
    if (threadIdx.x == 0) rstd[r] = rs;
}

template <typename TD, typename T>
__device__ void rms_backward_dx_wide(const TD* dy, const T* x, const T* w, const float* rstd,
                                     T* dx, u64 c) {
    u64 r = blockIdx.x; float rs = rstd[r];
    float a = 0.0f;
    for (u64 j = threadIdx.x; j < c; j += 256)
        a += ld(w, j) * ld(dy, r * c + j) * (ld(x, r * c + j) * rs);
    float gn = block_sum_256(a) / c;
    for (u64 j = threadIdx.x; j < c; j += 256) {
        float nrm = ld(x, r * c + j) * rs;
        st(dx, r * c + j, (ld(w, j) * ld(dy, r * c + j) - nrm * gn) * rs);
    }
}

// dw of wide rows in two deterministic stages, as reduce.cu's sums: thread
// (j, ch) adds rows of chunk ch in order into f32 partials [chunks][C].
template <typename TD, typename T>
__device__ void rms_backward_dw_wide(const TD* dy, const T* x, const float* rstd, float* partial,
                                     u64 rows, u64 c, u64 chunks) {
    u64 k = tid(); if (k >= c * chunks) return;
    u64 j = k % c, ch = k / c, r1 = (ch + 1) * rows / chunks;
    float gw = 0.0f;
    for (u64 r = ch * rows / chunks; r < r1; r++)
        gw += ld(x, r * c + j) * rstd[r] * ld(dy, r * c + j);
    partial[ch * c + j] = gw;
}

// Each column adds the partials [chunks][C] of either backward in order.
template <typename T>
__device__ void rms_backward_dw_finish(const float* partial, T* dw, u64 c, u64 chunks) {
    u64 j = tid(); if (j >= c) return;
    float gw = 0.0f;
    for (u64 ch = 0; ch < chunks; ch++) gw += partial[ch * c + j];
    st(dw, j, gw);
}

// The kernels of one storage type S (every tensor T but the f32 rstd).
#define RMSNORM(S, T)                                                                              \
extern "C" __global__ void rmsnorm_forward_rows_vec_##S(const T* x, const T* w, T* y, float* rstd, \
        unsigned rows, unsigned c, unsigned tpr, float eps) {                                      \
    rms_forward_rows<T, T, 16 / sizeof(T)>(x, w, y, rstd, rows, c, tpr, eps);                      \
}                                                                                                  \
extern "C" __global__ void rmsnorm_forward_rows_##S(const T* x, const T* w, T* y, float* rstd,     \
        unsigned rows, unsigned c, unsigned tpr, float eps) {                                      \
    rms_forward_rows<T, T, 1>(x, w, y, rstd, rows, c, tpr, eps);                                   \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_rows_vec_##S(const T* dy, const T* x, const T* w,      \
        const float* rstd, T* dx, float* partial, unsigned rows, unsigned c, unsigned tpr,         \
        unsigned rpb) {                                                                            \
    rms_backward_rows<T, T, 16 / sizeof(T)>(dy, x, w, rstd, dx, partial, rows, c, tpr, rpb);       \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_rows_##S(const T* dy, const T* x, const T* w,          \
        const float* rstd, T* dx, float* partial, unsigned rows, unsigned c, unsigned tpr,         \
        unsigned rpb) {                                                                            \
    rms_backward_rows<T, T, 1>(dy, x, w, rstd, dx, partial, rows, c, tpr, rpb);                    \
}                                                                                                  \
extern "C" __global__ void rmsnorm_forward_##S(const T* x, const T* w, T* y, float* rstd, u64 c,   \
                                                float eps) {                                       \
    rms_forward_wide<T, T>(x, w, y, rstd, c, eps);                                                 \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_dx_##S(const T* dy, const T* x, const T* w,            \
        const float* rstd, T* dx, u64 c) {                                                         \
    rms_backward_dx_wide<T, T>(dy, x, w, rstd, dx, c);                                             \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_dw_##S(const T* dy, const T* x, const float* rstd,     \
        float* partial, u64 rows, u64 c, u64 chunks) {                                             \
    rms_backward_dw_wide<T, T>(dy, x, rstd, partial, rows, c, chunks);                             \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_dw_finish_##S(const float* partial, T* dw, u64 c,      \
                                                           u64 chunks) {                           \
    rms_backward_dw_finish<T>(partial, dw, c, chunks);                                             \
}

FOR_EACH_DTYPE(RMSNORM)

// The mixed kernels, named by the low type S: x, w (and dx, dw) f32 with y
// (and dy) of type TY; f32's vector width, 4, sets theirs (8-byte loads and
// stores of TY).
#define RMSNORM_MIXED(S, TY)                                                                       \
extern "C" __global__ void rmsnorm_forward_rows_vec_mixed_##S(const float* x, const float* w,      \
        TY* y, float* rstd, unsigned rows, unsigned c, unsigned tpr, float eps) {                  \
    rms_forward_rows<float, TY, 4>(x, w, y, rstd, rows, c, tpr, eps);                              \
}                                                                                                  \
extern "C" __global__ void rmsnorm_forward_rows_mixed_##S(const float* x, const float* w, TY* y,   \
        float* rstd, unsigned rows, unsigned c, unsigned tpr, float eps) {                         \
    rms_forward_rows<float, TY, 1>(x, w, y, rstd, rows, c, tpr, eps);                              \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_rows_vec_mixed_##S(const TY* dy, const float* x,       \
        const float* w, const float* rstd, float* dx, float* partial, unsigned rows, unsigned c,   \
        unsigned tpr, unsigned rpb) {                                                              \
    rms_backward_rows<TY, float, 4>(dy, x, w, rstd, dx, partial, rows, c, tpr, rpb);               \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_rows_mixed_##S(const TY* dy, const float* x,           \
        const float* w, const float* rstd, float* dx, float* partial, unsigned rows, unsigned c,   \
        unsigned tpr, unsigned rpb) {                                                              \
    rms_backward_rows<TY, float, 1>(dy, x, w, rstd, dx, partial, rows, c, tpr, rpb);               \
}                                                                                                  \
extern "C" __global__ void rmsnorm_forward_mixed_##S(const float* x, const float* w, TY* y,        \
                                                      float* rstd, u64 c, float eps) {             \
    rms_forward_wide<float, TY>(x, w, y, rstd, c, eps);                                            \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_dx_mixed_##S(const TY* dy, const float* x,             \
        const float* w, const float* rstd, float* dx, u64 c) {                                     \
    rms_backward_dx_wide<TY, float>(dy, x, w, rstd, dx, c);                                        \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_dw_mixed_##S(const TY* dy, const float* x,             \
        const float* rstd, float* partial, u64 rows, u64 c, u64 chunks) {                          \
    rms_backward_dw_wide<TY, float>(dy, x, rstd, partial, rows, c, chunks);                        \
}                                                                                                  \
extern "C" __global__ void rmsnorm_backward_dw_finish_mixed_##S(const float* partial, float* dw,   \
                                                                 u64 c, u64 chunks) {              \
    rms_backward_dw_finish<float>(partial, dw, c, chunks);                                         \
}

RMSNORM_MIXED(f16, __half)
RMSNORM_MIXED(bf16, __nv_bfloat16)
