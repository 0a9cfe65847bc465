// Causal (grouped-query) attention, flash-style: the T×T matrix never exists.
// The forward keeps the per-row log-sum-exp; the backward recomputes
// probabilities from it.
//
// qkv [B, T, (H + 2K)·hd]: H query heads (C = H·hd columns), then K key heads,
// then K value heads, hd columns each; query head h reads key/value head
// h / (H/K) where it lies, so no K/V is copied (K = H: multi-head attention's
// [B, T, 3C]). out [B, T, C], lse [B, H, T] f32, delta [B, H, T] f32
// (Σ dout·out per row), dqkv like qkv.
//
// Tiling: a block of 256 threads owns 64 rows of one (batch, head); four
// consecutive lanes share a row, each holding a quarter of the head dims in
// registers. The other side (keys for the forward and dq, queries for dk/dv)
// streams through shared memory in tiles of 32 rows, widened to f32. A score
// is the lanes' partial dot products added with two xor shuffles, so all four
// lanes hold the same bits and need no further exchange. Head size ≤ 128 and
// a multiple of 4. Reductions run in a fixed order: results are deterministic
// (no atomics; dq and dk/dv are separate kernels for that reason, and a dk/dv
// block owns a key/value head, adding its group's query heads in order).

#define ATT_ROWS 64
#define ATT_TILE 32
#define ATT_LANES 4
#define ATT_MAXQ 32 // head dims per lane: 128 / 4

// Sum over the four lanes of a row; the same bits land in all four.
__device__ __forceinline__ float lanes4_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}

// Where a query head's operands lie in qkv, from C = H·hd, H, K and its
// key/value head.
struct AttLayout {
    u64 hd, rs, kcol, vcol;  // head size, qkv row stride, the k and v columns
};
__device__ __forceinline__ AttLayout att_layout(u64 c, u64 nh, u64 nkv, u64 kvh) {
    AttLayout a;
    a.hd = c / nh;
    a.rs = c + 2 * nkv * a.hd;
    a.kcol = c + kvh * a.hd;
    a.vcol = c + (nkv + kvh) * a.hd;
    return a;
}

// Stages rows j0 .. j0+ATT_TILE of the column block starting at `col` (of rows
// `row_stride` apart) as f32; rows past t read as zero.
template <typename T>
__device__ void stage_tile(float* dst, const T* src, u64 row_stride, u64 col, u64 j0, u64 t,
                           u64 hd) {
    for (u64 e = threadIdx.x; e < ATT_TILE * hd; e += blockDim.x) {
        u64 jj = e / hd, d = e % hd, j = j0 + jj;
        dst[e] = j < t ? ld(src, j * row_stride + col + d) : 0.0f;
    }
}

// Loads this lane's quarter of a row into registers (zeros past `dq`).
template <typename T>
__device__ __forceinline__ void load_quarter(float* r, const T* p, u64 dq) {
#pragma unroll
    for (int d = 0; d < ATT_MAXQ; d++) r[d] = (u64)d < dq ? ld(p, d) : 0.0f;
}

// This lane's part of row · tile[jj] over its quarter of the head dims.
__device__ __forceinline__ float dot_quarter(const float* r, const float* tile, u64 jj, u64 hd,
                                             u64 off, u64 dq) {
    float s = 0.0f;
#pragma unroll
    for (int d = 0; d < ATT_MAXQ; d++)
        if ((u64)d < dq) s += r[d] * tile[jj * hd + off + d];
    return s;
}

// grid (⌈T/64⌉, H, B), block 256.
template <typename T>
__device__ void attention_forward(const T* qkv, T* out, float* lse, u64 t, u64 c, u64 nh,
                                  u64 nkv, float scale) {
    __shared__ float kt[ATT_TILE * 128];
    __shared__ float vt[ATT_TILE * 128];
    u64 h = blockIdx.y, bi = blockIdx.z;
    AttLayout L = att_layout(c, nh, nkv, h / (nh / nkv));
    u64 hd = L.hd, dq = hd / ATT_LANES;
    u64 row0 = (u64)blockIdx.x * ATT_ROWS, lane = threadIdx.x % ATT_LANES;
    u64 i = row0 + threadIdx.x / ATT_LANES;
    // Rows past t still take part in every shuffle and barrier; they store nothing.
    u64 ic = i < t ? i : t - 1, off = lane * dq;
    const T* base = qkv + bi * t * L.rs;
    float q[ATT_MAXQ], acc[ATT_MAXQ];
    load_quarter(q, base + ic * L.rs + h * hd + off, dq);
#pragma unroll
    for (int d = 0; d < ATT_MAXQ; d++) acc[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    u64 end = row0 + ATT_ROWS < t ? row0 + ATT_ROWS : t; // keys this block can see
    for (u64 j0 = 0; j0 < end; j0 += ATT_TILE) {
        __syncthreads();
        stage_tile(kt, base, L.rs, L.kcol, j0, t, hd);
        stage_tile(vt, base, L.rs, L.vcol, j0, t, hd);
        __syncthreads();
#pragma unroll 1
        for (int jj = 0; jj < ATT_TILE; jj++) {
            // Every lane shuffles; masked keys (j > i) are skipped after.
            float s = lanes4_sum(dot_quarter(q, kt, jj, hd, off, dq)) * scale;
            if (j0 + jj > ic) continue;
            // Online softmax: rescale what was accumulated when the max grows.
            if (s > m) {
                float corr = expf(m - s);
                l *= corr;
#pragma unroll
                for (int d = 0; d < ATT_MAXQ; d++) acc[d] *= corr;
                m = s;
            }
            float p = expf(s - m);
            l += p;
#pragma unroll
            for (int d = 0; d < ATT_MAXQ; d++)
                if ((u64)d < dq) acc[d] += p * vt[jj * hd + off + d];
        }
    }
    if (i < t) {
        T* o = out + (bi * t + i) * c + h * hd + off;
        for (u64 d = 0; d < dq; d++) st(o, d, acc[d] / l);
        if (lane == 0) lse[(bi * nh + h) * t + i] = m + logf(l);
    }
}

// delta[b, h, i] = Σ_d dout·out over the head's dims: one thread per row.
template <typename T>
__device__ void attention_backward_delta(const T* o, const T* dout, float* delta, u64 b, u64 t,
                                         u64 c, u64 nh) {
    u64 k = tid();
    if (k >= b * nh * t) return;
    u64 hd = c / nh, i = k % t, h = (k / t) % nh, bi = k / (t * nh);
    u64 row = (bi * t + i) * c + h * hd;
    float s = 0.0f;
    for (u64 d = 0; d < hd; d++) s += ld(dout, row + d) * ld(o, row + d);
    delta[k] = s;
}

// dq for 64 query rows: keys (and values) stream through shared memory.
// grid (⌈T/64⌉, H, B), block 256.
template <typename T>
__device__ void attention_backward_dq(const T* qkv, const float* lse, const float* delta,
                                      const T* dout, T* dqkv, u64 t, u64 c, u64 nh,
                                      u64 nkv, float scale) {
    __shared__ float kt[ATT_TILE * 128];
    __shared__ float vt[ATT_TILE * 128];
    u64 h = blockIdx.y, bi = blockIdx.z;
    AttLayout L = att_layout(c, nh, nkv, h / (nh / nkv));
    u64 hd = L.hd, dq = hd / ATT_LANES;
    u64 row0 = (u64)blockIdx.x * ATT_ROWS, lane = threadIdx.x % ATT_LANES;
    u64 i = row0 + threadIdx.x / ATT_LANES;
    u64 ic = i < t ? i : t - 1, off = lane * dq;
    const T* base = qkv + bi * t * L.rs;
    float q[ATT_MAXQ], g[ATT_MAXQ], acc[ATT_MAXQ];
    load_quarter(q, base + ic * L.rs + h * hd + off, dq);
    load_quarter(g, dout + (bi * t + ic) * c + h * hd + off, dq);
#pragma unroll
    for (int d = 0; d < ATT_MAXQ; d++) acc[d] = 0.0f;
    u64 stat = (bi * nh + h) * t + ic;
    float li = lse[stat], di = delta[stat];
    u64 end = row0 + ATT_ROWS < t ? row0 + ATT_ROWS : t;
    for (u64 j0 = 0; j0 < end; j0 += ATT_TILE) {
        __syncthreads();
        stage_tile(kt, base, L.rs, L.kcol, j0, t, hd);
        stage_tile(vt, base, L.rs, L.vcol, j0, t, hd);
        __syncthreads();
#pragma unroll 1
        for (int jj = 0; jj < ATT_TILE; jj++) {
            float s = lanes4_sum(dot_quarter(q, kt, jj, hd, off, dq)) * scale;
            float dp = lanes4_sum(dot_quarter(g, vt, jj, hd, off, dq));
            float p = j0 + jj <= ic ? expf(s - li) : 0.0f;
            float ds = p * (dp - di) * scale;
#pragma unroll
            for (int d = 0; d < ATT_MAXQ; d++)
                if ((u64)d < dq) acc[d] += ds * kt[jj * hd + off + d];
        }
    }
    if (i < t) {
        T* o = dqkv + (bi * t + i) * L.rs + h * hd + off;
        for (u64 d = 0; d < dq; d++) st(o, d, acc[d]);
    }
}

// dk and dv for 64 key rows of one key/value head: for each query head of its
// group in order, that head's queries, dout and row statistics stream through
// shared memory from the block's first key to the end, all adding into the
// same registers, so the group's sum has one writer and a fixed order.
// grid (⌈T/64⌉, K, B), block 256.
template <typename T>
__device__ void attention_backward_dkdv(const T* qkv, const float* lse, const float* delta,
                                        const T* dout, T* dqkv, u64 t, u64 c, u64 nh, u64 nkv,
                                        float scale) {
    __shared__ float qt[ATT_TILE * 128];
    __shared__ float gt[ATT_TILE * 128];
    __shared__ float lt[ATT_TILE], dt[ATT_TILE];
    u64 kvh = blockIdx.y, bi = blockIdx.z, group = nh / nkv;
    AttLayout L = att_layout(c, nh, nkv, kvh);
    u64 hd = L.hd, dq = hd / ATT_LANES;
    u64 row0 = (u64)blockIdx.x * ATT_ROWS, lane = threadIdx.x % ATT_LANES;
    u64 j = row0 + threadIdx.x / ATT_LANES;
    u64 jc = j < t ? j : t - 1, off = lane * dq;
    const T* base = qkv + bi * t * L.rs;
    float k[ATT_MAXQ], v[ATT_MAXQ], gk[ATT_MAXQ], gv[ATT_MAXQ];
    load_quarter(k, base + jc * L.rs + L.kcol + off, dq);
    load_quarter(v, base + jc * L.rs + L.vcol + off, dq);
#pragma unroll
    for (int d = 0; d < ATT_MAXQ; d++) { gk[d] = 0.0f; gv[d] = 0.0f; }
    for (u64 h = kvh * group; h < (kvh + 1) * group; h++) {
        const float* lrow = lse + (bi * nh + h) * t;
        const float* drow = delta + (bi * nh + h) * t;
        for (u64 i0 = row0; i0 < t; i0 += ATT_TILE) {
            __syncthreads();
            stage_tile(qt, base, L.rs, h * hd, i0, t, hd);
            stage_tile(gt, dout + bi * t * c, c, h * hd, i0, t, hd);
            if (threadIdx.x < ATT_TILE) {
                u64 i = i0 + threadIdx.x;
                lt[threadIdx.x] = i < t ? lrow[i] : 0.0f;
                dt[threadIdx.x] = i < t ? drow[i] : 0.0f;
            }
            __syncthreads();
#pragma unroll 1
            for (int ii = 0; ii < ATT_TILE; ii++) {
                u64 i = i0 + ii;
                float s = lanes4_sum(dot_quarter(k, qt, ii, hd, off, dq)) * scale;
                float dp = lanes4_sum(dot_quarter(v, gt, ii, hd, off, dq));
                float p = (i >= jc && i < t) ? expf(s - lt[ii]) : 0.0f;
                float ds = p * (dp - dt[ii]) * scale;
#pragma unroll
                for (int d = 0; d < ATT_MAXQ; d++)
                    if ((u64)d < dq) {
                        gv[d] += p * gt[ii * hd + off + d];
                        gk[d] += ds * qt[ii * hd + off + d];
                    }
            }
        }
    }
    if (j < t) {
        T* o = dqkv + (bi * t + j) * L.rs + off;
        for (u64 d = 0; d < dq; d++) {
            st(o + L.kcol, d, gk[d]);
            st(o + L.vcol, d, gv[d]);
        }
    }
}

#define ATTENTION(S, T)                                                                            \
extern "C" __global__ void attention_forward_##S(const T* qkv, T* out, float* lse, u64 t, u64 c,  \
                                                  u64 nh, u64 nkv, float scale) {                  \
    attention_forward(qkv, out, lse, t, c, nh, nkv, scale);                                        \
}                                                                                                  \
extern "C" __global__ void attention_backward_delta_##S(const T* o, const T* dout, float* delta,  \
                                                         u64 b, u64 t, u64 c, u64 nh) {            \
    attention_backward_delta(o, dout, delta, b, t, c, nh);                                         \
}                                                                                                  \
extern "C" __global__ void attention_backward_dq_##S(const T* qkv, const float* lse,             \
        const float* delta, const T* dout, T* dqkv, u64 t, u64 c, u64 nh, u64 nkv, float scale) {  \
    attention_backward_dq(qkv, lse, delta, dout, dqkv, t, c, nh, nkv, scale);                      \
}                                                                                                  \
extern "C" __global__ void attention_backward_dkdv_##S(const T* qkv, const float* lse,           \
        const float* delta, const T* dout, T* dqkv, u64 t, u64 c, u64 nh, u64 nkv, float scale) {  \
    attention_backward_dkdv(qkv, lse, delta, dout, dqkv, t, c, nh, nkv, scale);                    \
}
FOR_EACH_DTYPE(ATTENTION)
