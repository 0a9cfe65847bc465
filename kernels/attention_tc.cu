// Causal attention on tensor cores: the algorithm and contract of attention.cu
// (qkv [B, T, 3C], out [B, T, C], lse and delta [B, H, T] f32, no T×T matrix),
// with every product (Q·Kᵀ, P·V, dO·Vᵀ, dS·K, Pᵀ·dO, dSᵀ·Q) done by WMMA on
// f16/bf16 operands with f32 accumulation. For head sizes 16, 32, 48 and 64 on
// sm_80 and later; the backend uses attention.cu otherwise.
//
// A block of 4 warps owns a 32-row tile of one (batch, head); the other side
// streams through shared memory in 32-row tiles. Score tiles are written to
// shared memory as f32, where 4 threads per row apply the mask and the softmax
// (WMMA's register layout is opaque, so row-wise work happens there); P or dS
// is stored back in the storage type for the next product. Results are
// deterministic: no atomics, dq and dk/dv in separate kernels.
#ifndef HEADROOM_CUDA_EMULATION
#include <mma.h>
#endif
using namespace nvcuda;

#define TC_TILE 32
#define TC_HD 64
#define TC_THREADS 128

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> Acc;

// acc += A[16×K] · B[K×16], A row-major (lda); B row-major (ldb).
template <typename T>
__device__ void mma_ab(Acc& acc, const T* a, u64 lda, const T* b, u64 ldb, u64 k) {
    for (u64 kk = 0; kk < k; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, a + kk, lda);
        wmma::load_matrix_sync(fb, b + kk * ldb, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
    }
}

// acc += A[16×K] · Bᵀ where B[16×K] is row-major (ldb): Bᵀ read column-major.
template <typename T>
__device__ void mma_abt(Acc& acc, const T* a, u64 lda, const T* b, u64 ldb, u64 k) {
    for (u64 kk = 0; kk < k; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, a + kk, lda);
        wmma::load_matrix_sync(fb, b + kk, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
    }
}

// out[32×32] (f32, row-major) = A[32×K] · Bᵀ with A, B row-major [32][ld]: one
// 16×16 tile per warp.
template <typename T>
__device__ void tile_abt(float* out, const T* a, const T* b, u64 ld, u64 k) {
    u64 w = threadIdx.x / 32, tr = w / 2, tc = w % 2;
    Acc acc;
    wmma::fill_fragment(acc, 0.0f);
    mma_abt(acc, a + tr * 16 * ld, ld, b + tc * 16 * ld, ld, k);
    wmma::store_matrix_sync(out + tr * 16 * TC_TILE + tc * 16, acc, TC_TILE, wmma::mem_row_major);
}

// o[32×hd] (f32, row-major, ldm hd) += P[32×32] · V[32×hd], P and V row-major:
// 2·hd/16 tiles shared out over the 4 warps.
template <typename T>
__device__ void tile_acc_ab(float* o, const T* p, const T* v, u64 hd) {
    u64 tiles = 2 * (hd / 16);
    for (u64 tile = threadIdx.x / 32; tile < tiles; tile += 4) {
        u64 tr = tile / (hd / 16), tc = tile % (hd / 16);
        Acc acc;
        wmma::load_matrix_sync(acc, o + tr * 16 * hd + tc * 16, hd, wmma::mem_row_major);
        mma_ab(acc, p + tr * 16 * TC_TILE, TC_TILE, v + tc * 16, hd, TC_TILE);
        wmma::store_matrix_sync(o + tr * 16 * hd + tc * 16, acc, hd, wmma::mem_row_major);
    }
}

// Copies rows r0 .. r0+32 of a [rows][stride] matrix, columns col .. col+hd, into
// dst [32][hd]; rows past `rows` are zeros.
template <typename T>
__device__ void tc_stage(T* dst, const T* src, u64 stride, u64 col, u64 r0, u64 rows, u64 hd) {
    for (u64 e = threadIdx.x; e < TC_TILE * hd; e += blockDim.x) {
        u64 rr = e / hd, d = e % hd, r = r0 + rr;
        st(dst, e, r < rows ? ld(src, r * stride + col + d) : 0.0f);
    }
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// grid (⌈T/32⌉, H, B), block 128.
template <typename T>
__device__ void attention_tc_forward(const T* qkv, T* out, float* lse, u64 t, u64 c, u64 nh,
                                     float scale) {
    __shared__ __align__(32) T qs[TC_TILE * TC_HD];
    __shared__ __align__(32) T ks[TC_TILE * TC_HD];
    __shared__ __align__(32) T vs[TC_TILE * TC_HD];
    __shared__ __align__(32) T ps[TC_TILE * TC_TILE];
    __shared__ __align__(32) float ss[TC_TILE * TC_TILE];
    __shared__ __align__(32) float os[TC_TILE * TC_HD];
    u64 hd = c / nh, h = blockIdx.y, bi = blockIdx.z, i0 = (u64)blockIdx.x * TC_TILE;
    const T* base = qkv + bi * t * 3 * c;
    // Row work: thread (row, part) takes 8 columns of a score row, hd/4 of o's.
    u64 row = threadIdx.x / 4, part = threadIdx.x % 4, i = i0 + row, oq = hd / 4;
    tc_stage(qs, base, 3 * c, h * hd, i0, t, hd);
    for (u64 e = threadIdx.x; e < TC_TILE * hd; e += blockDim.x) os[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    u64 end = i0 + TC_TILE < t ? i0 + TC_TILE : t;
    for (u64 j0 = 0; j0 < end; j0 += TC_TILE) {
        __syncthreads();
        tc_stage(ks, base, 3 * c, c + h * hd, j0, t, hd);
        tc_stage(vs, base, 3 * c, 2 * c + h * hd, j0, t, hd);
        __syncthreads();
        tile_abt(ss, qs, ks, hd, hd);
        __syncthreads();
        float sv[8], mt = -INFINITY;
        for (int q = 0; q < 8; q++) {
            u64 jj = part * 8 + q, j = j0 + jj;
            // Row i sees keys j ≤ i (and j < t); key 0 is in the first tile, so
            // every row's max is finite from then on.
            sv[q] = (j <= i && j < t) ? ss[row * TC_TILE + jj] * scale : -INFINITY;
            mt = fmaxf(mt, sv[q]);
        }
        float mn = fmaxf(m, quad_max(mt));
        float corr = m == mn ? 1.0f : expf(m - mn), rs = 0.0f;
        for (int q = 0; q < 8; q++) {
            float p = sv[q] == -INFINITY ? 0.0f : expf(sv[q] - mn);
            st(ps, row * TC_TILE + part * 8 + q, p);
            rs += p;
        }
        l = l * corr + quad_sum(rs);
        m = mn;
        for (u64 d = part * oq; d < (part + 1) * oq; d++) os[row * hd + d] *= corr;
        __syncthreads();
        tile_acc_ab(os, ps, vs, hd);
    }
    __syncthreads();
    if (i < t) {
        for (u64 d = part * oq; d < (part + 1) * oq; d++)
            st(out, (bi * t + i) * c + h * hd + d, os[row * hd + d] / l);
        if (part == 0) lse[(bi * nh + h) * t + i] = m + logf(l);
    }
}

// dq for 32 query rows; keys and values stream. grid (⌈T/32⌉, H, B), block 128.
template <typename T>
__device__ void attention_tc_backward_dq(const T* qkv, const float* lse, const float* delta,
                                         const T* dout, T* dqkv, u64 t, u64 c, u64 nh,
                                         float scale) {
    __shared__ __align__(32) T qs[TC_TILE * TC_HD];
    __shared__ __align__(32) T gs[TC_TILE * TC_HD];
    __shared__ __align__(32) T ks[TC_TILE * TC_HD];
    __shared__ __align__(32) T vs[TC_TILE * TC_HD];
    __shared__ __align__(32) T dss[TC_TILE * TC_TILE];
    __shared__ __align__(32) float ss[TC_TILE * TC_TILE];
    __shared__ __align__(32) float dps[TC_TILE * TC_TILE];
    __shared__ __align__(32) float dq[TC_TILE * TC_HD];
    u64 hd = c / nh, h = blockIdx.y, bi = blockIdx.z, i0 = (u64)blockIdx.x * TC_TILE;
    const T* base = qkv + bi * t * 3 * c;
    u64 row = threadIdx.x / 4, part = threadIdx.x % 4, i = i0 + row, oq = hd / 4;
    tc_stage(qs, base, 3 * c, h * hd, i0, t, hd);
    tc_stage(gs, dout + bi * t * c, c, h * hd, i0, t, hd);
    for (u64 e = threadIdx.x; e < TC_TILE * hd; e += blockDim.x) dq[e] = 0.0f;
    u64 stat = (bi * nh + h) * t + (i < t ? i : t - 1);
    float li = lse[stat], di = delta[stat];
    u64 end = i0 + TC_TILE < t ? i0 + TC_TILE : t;
    for (u64 j0 = 0; j0 < end; j0 += TC_TILE) {
        __syncthreads();
        tc_stage(ks, base, 3 * c, c + h * hd, j0, t, hd);
        tc_stage(vs, base, 3 * c, 2 * c + h * hd, j0, t, hd);
        __syncthreads();
        tile_abt(ss, qs, ks, hd, hd);  // S  = Q·Kᵀ
        tile_abt(dps, gs, vs, hd, hd); // dP = dO·Vᵀ
        __syncthreads();
        for (int q = 0; q < 8; q++) {
            u64 jj = part * 8 + q, j = j0 + jj, e = row * TC_TILE + jj;
            float p = (j <= i && j < t) ? expf(ss[e] * scale - li) : 0.0f;
            st(dss, e, p * (dps[e] - di) * scale);
        }
        __syncthreads();
        tile_acc_ab(dq, dss, ks, hd); // dQ += dS·K
    }
    __syncthreads();
    if (i < t)
        for (u64 d = part * oq; d < (part + 1) * oq; d++)
            st(dqkv, (bi * t + i) * 3 * c + h * hd + d, dq[row * hd + d]);
}

// dk and dv for 32 key rows; queries, dout and their statistics stream from the
// block's first key on. grid (⌈T/32⌉, H, B), block 128.
template <typename T>
__device__ void attention_tc_backward_dkdv(const T* qkv, const float* lse, const float* delta,
                                           const T* dout, T* dqkv, u64 t, u64 c, u64 nh,
                                           float scale) {
    __shared__ __align__(32) T ks[TC_TILE * TC_HD];
    __shared__ __align__(32) T vs[TC_TILE * TC_HD];
    __shared__ __align__(32) T qs[TC_TILE * TC_HD];
    __shared__ __align__(32) T gs[TC_TILE * TC_HD];
    __shared__ __align__(32) T pts[TC_TILE * TC_TILE];
    __shared__ __align__(32) T dsts[TC_TILE * TC_TILE];
    __shared__ __align__(32) float sts[TC_TILE * TC_TILE];
    __shared__ __align__(32) float dpts[TC_TILE * TC_TILE];
    __shared__ __align__(32) float dk[TC_TILE * TC_HD];
    __shared__ __align__(32) float dv[TC_TILE * TC_HD];
    __shared__ float ls[TC_TILE], ds[TC_TILE];
    u64 hd = c / nh, h = blockIdx.y, bi = blockIdx.z, j0 = (u64)blockIdx.x * TC_TILE;
    const T* base = qkv + bi * t * 3 * c;
    // Row work on the transposed scores: thread (row, part) has key j, 8 queries.
    u64 row = threadIdx.x / 4, part = threadIdx.x % 4, j = j0 + row, oq = hd / 4;
    tc_stage(ks, base, 3 * c, c + h * hd, j0, t, hd);
    tc_stage(vs, base, 3 * c, 2 * c + h * hd, j0, t, hd);
    for (u64 e = threadIdx.x; e < TC_TILE * hd; e += blockDim.x) { dk[e] = 0.0f; dv[e] = 0.0f; }
    const float* lrow = lse + (bi * nh + h) * t;
    const float* drow = delta + (bi * nh + h) * t;
    for (u64 i0 = j0; i0 < t; i0 += TC_TILE) {
        __syncthreads();
        tc_stage(qs, base, 3 * c, h * hd, i0, t, hd);
        tc_stage(gs, dout + bi * t * c, c, h * hd, i0, t, hd);
        if (threadIdx.x < TC_TILE) {
            u64 i = i0 + threadIdx.x;
            ls[threadIdx.x] = i < t ? lrow[i] : 0.0f;
            ds[threadIdx.x] = i < t ? drow[i] : 0.0f;
        }
        __syncthreads();
        tile_abt(sts, ks, qs, hd, hd);  // Sᵀ  = K·Qᵀ
        tile_abt(dpts, vs, gs, hd, hd); // dPᵀ = V·dOᵀ
        __syncthreads();
        for (int q = 0; q < 8; q++) {
            u64 ii = part * 8 + q, i = i0 + ii, e = row * TC_TILE + ii;
            float p = (i >= j && i < t && j < t) ? expf(sts[e] * scale - ls[ii]) : 0.0f;
            st(pts, e, p);
            st(dsts, e, p * (dpts[e] - ds[ii]) * scale);
        }
        __syncthreads();
        tile_acc_ab(dv, pts, gs, hd);  // dV += Pᵀ·dO
        tile_acc_ab(dk, dsts, qs, hd); // dK += dSᵀ·Q
    }
    __syncthreads();
    if (j < t) {
        T* o = dqkv + (bi * t + j) * 3 * c + h * hd;
        for (u64 d = part * oq; d < (part + 1) * oq; d++) {
            st(o + c, d, dk[row * hd + d]);
            st(o + 2 * c, d, dv[row * hd + d]);
        }
    }
}

#define ATTENTION_TC(S, T)                                                                         \
extern "C" __global__ void attention_tc_forward_##S(const T* qkv, T* out, float* lse, u64 t,      \
                                                     u64 c, u64 nh, float scale) {                 \
    attention_tc_forward(qkv, out, lse, t, c, nh, scale);                                          \
}                                                                                                  \
extern "C" __global__ void attention_tc_backward_dq_##S(const T* qkv, const float* lse,          \
        const float* delta, const T* dout, T* dqkv, u64 t, u64 c, u64 nh, float scale) {           \
    attention_tc_backward_dq(qkv, lse, delta, dout, dqkv, t, c, nh, scale);                        \
}                                                                                                  \
extern "C" __global__ void attention_tc_backward_dkdv_##S(const T* qkv, const float* lse,        \
        const float* delta, const T* dout, T* dqkv, u64 t, u64 c, u64 nh, float scale) {           \
    attention_tc_backward_dkdv(qkv, lse, delta, dout, dqkv, t, c, nh, scale);                      \
}
ATTENTION_TC(f16, __half)
ATTENTION_TC(bf16, __nv_bfloat16)
