// Causal attention on tensor cores, FlashAttention-2 style, for f16/bf16 and
// head sizes 16, 32, 48, 64 and 128 (a template parameter; one set of entries
// per dtype and head size) on sm_80 and later. Contract of attention.cu:
// qkv [B, T, (H + 2K)·HD] (H query heads, C = H·HD columns, then K key and K
// value heads; query head h reads key/value head h / (H/K) in place),
// out [B, T, C], lse [B, H, T] f32, delta [B, H, T] f32 (workspace), dqkv
// like qkv; the T×T matrix never exists.
//
// A block of 4 warps owns 64 rows of one (batch, head), 16 per warp: query
// rows of a query head for the forward and dq, key rows of a key/value head
// for dk/dv, which streams the queries of every head of its group in turn
// into the same accumulators (one writer, a fixed order: no atomics). The other side streams
// through shared memory in tiles (64 rows, 32 when HD = 128 to stay within
// 48 KB of static shared memory), copied with 16-byte cp.async into a double
// buffer so the next tile lands while this one is multiplied. Products are
// mma.sync.m16n8k16 (f32 accumulate) on fragments read with ldmatrix; the
// PTX ISA documents the register layout ("Matrix Fragments for mma.m16n8k16"),
// which this file relies on:
//   lane l, g = l / 4, q = l % 4;
//   A (16×16): reg0 (row g, cols 2q, 2q+1), reg1 (g+8, same), reg2 (g, 2q+8..),
//              reg3 (g+8, 2q+8..); the lower half holds the lower column;
//   B (16×8):  reg0 (rows 2q, 2q+1, col g), reg1 (rows 2q+8, 2q+9, col g);
//   C (16×8):  c0, c1 (row g, cols 2q, 2q+1), c2, c3 (row g+8, same).
// Two adjacent C tiles (16 columns) hold exactly an A fragment's elements, so
// probabilities go from the score accumulators to the next product's operand
// in registers, and the online softmax reduces a row over the quad (lanes
// 4g..4g+3) with two xor shuffles. Row sums stay per lane until the end.
//
// Backward: choice (a), 7 products, deterministic, no atomics. Per (64-row ×
// 64-key) tile pair of the causal triangle, FA2's 5 products (S, dP, dV, dK,
// dQ) against our 7 (the dq kernel recomputes S and dP): GPT-2 124M bf16,
// B 16, T 1024, H 12, HD 64, per layer: 5 products = 64 GFLOP, 7 = 90 GFLOP;
// at ~200 TFLOP/s of mma.sync on an H100 that is ~0.32 ms against ~0.45 ms,
// 1.6 ms a step over 12 layers. (b) 5 products with a deterministic dq needs
// either dq partials per key block (T/64 · B·T·C·4 bytes = 805 MB here) or one
// block per (b, h) walking key blocks in order (192 blocks for 132 SMs, a
// serial chain of 136 tile pairs each: slower than (a)). (c) 5 products with
// f32 atomics on dq: B·H·T²/2·HD/64 = 100 M atomic adds (400 MB of L2 atomic
// traffic) plus a B·T·C f32 scratch and a cast launch, ~0.1–0.2 ms; it saves
// at most ~0.1 ms a layer over (a) and gives up bit-identical runs. So (a):
// the dq kernel also computes delta = Σ dO·O for its rows (no separate delta
// launch), then the dk/dv kernel reads it: 2 launches.
#define FA_THREADS 128
#define FA_ROWS 64
#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f

// Keys (or queries) per streamed tile, and the padded row length of a tile in
// shared memory: 8 extra elements (16 bytes) put the 8 rows one ldmatrix phase
// reads in distinct banks.
template <int HD> struct FaTile {
    static const int N = HD > 64 ? 32 : 64;
    static const int LD = HD + 8;
};

#ifndef HEADROOM_CUDA_EMULATION
// The hardware's instructions; tests/cuda_emu/emu.h has CPU versions with the
// same semantics (each lane gets only its own fragment registers).
template <typename T>
__device__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const unsigned (&a)[4],
                                                  unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const unsigned (&a)[4],
                                                         unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
// Four 8×8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// Two adjacent elements as one 32-bit store (the column is even, rows 4-aligned).
template <typename T> __device__ __forceinline__ void st_pair(T* p, unsigned v) {
    *reinterpret_cast<unsigned*>(p) = v;
}
#endif

__device__ __forceinline__ unsigned fa_bits(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ unsigned fa_bits(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
__device__ __forceinline__ __half fa_round(float x, __half) { return __float2half_rn(x); }
__device__ __forceinline__ __nv_bfloat16 fa_round(float x, __nv_bfloat16) {
    return __float2bfloat16_rn(x);
}
// Two floats rounded to T, `lo` in the lower half (the lower column).
template <typename T> __device__ __forceinline__ unsigned fa_pack(float lo, float hi) {
    return fa_bits(fa_round(lo, T())) | (fa_bits(fa_round(hi, T())) << 16);
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Starts copying rows r0 .. r0+ROWS of a matrix whose row r is at
// src + r·stride (HD columns) into dst [ROWS][LD]; rows ≥ t become zeros.
template <int ROWS, int HD, typename T>
__device__ __forceinline__ void fa_load(T* dst, const T* src, u64 stride, unsigned r0,
                                        unsigned t) {
    const int per_row = HD / 8; // 16-byte chunks
    const T* s0 = src + (u64)r0 * stride;
    for (int k = threadIdx.x; k < ROWS * per_row; k += FA_THREADS) {
        int r = k / per_row, col = (k % per_row) * 8;
        T* d = dst + r * FaTile<HD>::LD + col;
        if (r0 + r < t) {
            cp_async16(d, s0 + (u64)r * stride + col);
        } else {
            for (int e = 0; e < 8; e++) st(d, e, 0.0f);
        }
    }
}

// The K/V stream of the forward and dq kernels, from the key head's column
// `kb` and the value head's `vb` of the batch's first row: `sm` holds two
// buffers, each the K tile [N][LD] followed by the V tile. Before the loop,
// `fa_kv_first` starts tile 0; at step n, `fa_kv_next` starts tile n + 1 into
// the other buffer (if there is one), waits for tile n and returns its K (V
// follows at + N·LD). The caller syncs the block before reading it.
template <int N, int HD, typename T>
__device__ __forceinline__ void fa_kv_first(T* sm, const T* kb, const T* vb, u64 rs, unsigned t) {
    constexpr int LD = FaTile<HD>::LD;
    fa_load<N, HD>(sm, kb, rs, 0, t);
    fa_load<N, HD>(sm + N * LD, vb, rs, 0, t);
    cp_async_commit();
}
template <int N, int HD, typename T>
__device__ __forceinline__ const T* fa_kv_next(T* sm, const T* kb, const T* vb, u64 rs,
                                               unsigned n, unsigned tiles, unsigned t) {
    constexpr int LD = FaTile<HD>::LD;
    if (n + 1 < tiles) {
        T* next = sm + (n + 1) % 2 * 2 * N * LD;
        fa_load<N, HD>(next, kb, rs, (n + 1) * N, t);
        fa_load<N, HD>(next + N * LD, vb, rs, (n + 1) * N, t);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    return sm + n % 2 * 2 * N * LD;
}

// A fragments of this warp's 16 rows (row 0 at `rows`) over all HD columns.
template <int HD, typename T>
__device__ __forceinline__ void fa_frags(unsigned (&f)[HD / 16][4], const T* rows, unsigned lane) {
    const T* p = rows + ((lane / 8) % 2 * 8 + lane % 8) * FaTile<HD>::LD + lane / 16 * 8;
#pragma unroll
    for (int kt = 0; kt < HD / 16; kt++) ldsm_x4(f[kt], p + kt * 16);
}

// acc[16×N] = A[16×HD] · Bᵀ, A as fragments, B [N][LD] rows in shared memory.
template <int N, int HD, typename T>
__device__ __forceinline__ void fa_abt(float (&acc)[N / 8][4], const unsigned (&a)[HD / 16][4],
                                       const T* b, unsigned lane) {
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[nt][e] = 0.0f;
    // Matrices: rows (np·16 + 0..7, +8..15) × columns (kt·16 + 0..7, +8..15),
    // giving n-tile 2np's B registers, then 2np+1's.
    const T* p = b + (lane / 16 * 8 + lane % 8) * FaTile<HD>::LD + (lane / 8) % 2 * 8;
#pragma unroll
    for (int np = 0; np < N / 16; np++)
#pragma unroll
        for (int kt = 0; kt < HD / 16; kt++) {
            unsigned r[4];
            ldsm_x4(r, p + np * 16 * FaTile<HD>::LD + kt * 16);
            mma_16816<T>(acc[2 * np], a[kt], r[0], r[1]);
            mma_16816<T>(acc[2 * np + 1], a[kt], r[2], r[3]);
        }
}

// acc[16×HD] += P[16×K] · B, P as f32 accumulators (rounded to T here), B
// [K][LD] rows in shared memory (read transposed).
template <int K, int HD, typename T>
__device__ __forceinline__ void fa_ab(float (&acc)[HD / 8][4], const float (&p)[K / 8][4],
                                      const T* b, unsigned lane) {
    // Matrices: rows (kt·16 + 0..7, +8..15) × columns (np·16 + 0..7), then
    // columns np·16 + 8..15: n-tile 2np's B registers, then 2np+1's.
    const T* base = b + ((lane / 8) % 2 * 8 + lane % 8) * FaTile<HD>::LD + lane / 16 * 8;
#pragma unroll
    for (int kt = 0; kt < K / 16; kt++) {
        unsigned a[4] = {fa_pack<T>(p[2 * kt][0], p[2 * kt][1]),
                         fa_pack<T>(p[2 * kt][2], p[2 * kt][3]),
                         fa_pack<T>(p[2 * kt + 1][0], p[2 * kt + 1][1]),
                         fa_pack<T>(p[2 * kt + 1][2], p[2 * kt + 1][3])};
#pragma unroll
        for (int np = 0; np < HD / 16; np++) {
            unsigned r[4];
            ldsm_x4_t(r, base + kt * 16 * FaTile<HD>::LD + np * 16);
            mma_16816<T>(acc[2 * np], a, r[0], r[1]);
            mma_16816<T>(acc[2 * np + 1], a, r[2], r[3]);
        }
    }
}

// Stores accumulator rows g and g+8 (row0 + g < t, and row0 + g + 8 < t) of a
// 16×HD tile at dst + row·stride, times `mul`.
template <int HD, typename T>
__device__ __forceinline__ void fa_store(T* dst, u64 stride, const float (&acc)[HD / 8][4],
                                         unsigned row0, unsigned t, unsigned lane, float mul_lo,
                                         float mul_hi) {
    unsigned g = lane / 4, q = lane % 4;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        unsigned row = row0 + g + 8 * half;
        if (row >= t) continue;
        float mul = half ? mul_hi : mul_lo;
        T* d = dst + (u64)row * stride + 2 * q;
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++)
            st_pair(d + nt * 8, fa_pack<T>(acc[nt][2 * half] * mul, acc[nt][2 * half + 1] * mul));
    }
}

// A qkv row's stride, and the first row's key and value columns of key/value
// head `kvh` in batch `b`, from C = H·HD and K.
template <int HD, typename T>
struct FaKv {
    u64 rs;
    const T *k, *v;
    __device__ __forceinline__ FaKv(const T* qkv, u64 t64, u64 c, u64 nkv, unsigned b, u64 kvh) {
        rs = c + 2 * nkv * HD;
        k = qkv + (u64)b * t64 * rs + c + kvh * HD;
        v = k + nkv * HD;
    }
};

// grid (⌈T/64⌉, H, B), block 128.
template <typename T, int HD>
__device__ void fa_forward(const T* qkv, T* out, float* lse, u64 t64, u64 c, u64 nh, u64 nkv,
                           float scale) {
    const int N = FaTile<HD>::N, LD = FaTile<HD>::LD;
    // [buffer][k | v][key][LD]; Q passes through it before the loop.
    __shared__ __align__(16) T sm[2 * 2 * N * LD];
    const unsigned t = (unsigned)t64, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned g = lane / 4, q = lane % 4, h = blockIdx.y, b = blockIdx.z;
    const unsigned i0 = blockIdx.x * FA_ROWS, w0 = i0 + 16 * warp; // block's, warp's first row
    const FaKv<HD, T> kv(qkv, t64, c, nkv, b, h / (nh / nkv));
    const u64 rs = kv.rs;
    const T* base = qkv + (u64)b * t64 * rs + h * HD;
    fa_load<FA_ROWS, HD>(sm, base, rs, i0, t);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    unsigned qf[HD / 16][4];
    fa_frags<HD>(qf, sm + 16 * warp * LD, lane);
    __syncthreads();

    float o[HD / 8][4];
#pragma unroll
    for (int nt = 0; nt < HD / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[nt][e] = 0.0f;
    // Row max of the scores in log2 units (scale·log2 e folded in), and this
    // lane's part of Σ 2^(x − max), for rows g and g + 8.
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const float sl2 = scale * FA_LOG2E;
    const unsigned kend = i0 + FA_ROWS < t ? i0 + FA_ROWS : t, tiles = (kend + N - 1) / N;
    fa_kv_first<N, HD>(sm, kv.k, kv.v, rs, t);
    for (unsigned n = 0; n < tiles; n++) {
        const unsigned j0 = n * N;
        const T* ks = fa_kv_next<N, HD>(sm, kv.k, kv.v, rs, n, tiles, t);
        __syncthreads();
        // Warp-uniform: a tile wholly above this warp's rows is skipped.
        if (j0 <= w0 + 15) {
            float s[N / 8][4];
            fa_abt<N, HD>(s, qf, ks, lane);
            const bool mask = j0 + N - 1 > w0;
            float mx[2] = {m[0], m[1]};
#pragma unroll
            for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = s[nt][e] * sl2;
                    unsigned j = j0 + nt * 8 + 2 * q + e % 2, i = w0 + g + 8 * (e / 2);
                    if (mask && j > i) x = -INFINITY;
                    s[nt][e] = x;
                    mx[e / 2] = fmaxf(mx[e / 2], x);
                }
            // Key 0 is in the first tile, so the max is finite from then on and
            // the first correction is 2^−∞ = 0 on zeros.
            float corr[2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r] = quad_max(mx[r]);
                corr[r] = exp2f(m[r] - mx[r]);
                m[r] = mx[r];
                l[r] *= corr[r];
            }
#pragma unroll
            for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float p = exp2f(s[nt][e] - m[e / 2]);
                    s[nt][e] = p;
                    l[e / 2] += p;
                }
#pragma unroll
            for (int nt = 0; nt < HD / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) o[nt][e] *= corr[e / 2];
            fa_ab<N, HD>(o, s, ks + N * LD, lane);
        }
        __syncthreads();
    }
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] = quad_sum(l[r]);
        inv[r] = 1.0f / l[r];
    }
    fa_store<HD>(out + (u64)b * t64 * c + h * HD, c, o, w0, t, lane, inv[0], inv[1]);
    if (q == 0)
        for (int r = 0; r < 2; r++) {
            unsigned i = w0 + g + 8 * r;
            if (i < t) lse[((u64)b * nh + h) * t64 + i] = m[r] * FA_LN2 + logf(l[r]);
        }
}

// dq for 64 query rows, keys and values streaming; first delta = Σ dO·O of
// those rows, written to `delta` for the dk/dv kernel. grid (⌈T/64⌉, H, B),
// block 128.
template <typename T, int HD>
__device__ void fa_backward_dq(const T* qkv, const T* out, const float* lse, const T* dout,
                               float* delta, T* dqkv, u64 t64, u64 c, u64 nh, u64 nkv,
                               float scale) {
    const int N = FaTile<HD>::N, LD = FaTile<HD>::LD;
    __shared__ __align__(16) T sm[2 * 2 * N * LD]; // as the forward's; Q, dO pass through
    __shared__ float stat[2][FA_ROWS];              // lse·log2 e, delta of the block's rows
    const unsigned t = (unsigned)t64, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned g = lane / 4, q = lane % 4, h = blockIdx.y, b = blockIdx.z;
    const unsigned i0 = blockIdx.x * FA_ROWS, w0 = i0 + 16 * warp;
    const FaKv<HD, T> kv(qkv, t64, c, nkv, b, h / (nh / nkv));
    const u64 rs = kv.rs, srow = ((u64)b * nh + h) * t64;
    const T* base = qkv + (u64)b * t64 * rs + h * HD;
    const T* gbase = dout + (u64)b * t64 * c + h * HD;
    fa_load<FA_ROWS, HD>(sm, base, rs, i0, t);
    fa_load<FA_ROWS, HD>(sm + FA_ROWS * LD, gbase, c, i0, t);
    cp_async_commit();
    {
        // Two threads a row, each half the columns, in a fixed order.
        unsigned r = threadIdx.x / 2, i = i0 + r;
        float s = 0.0f;
        if (i < t) {
            const T* go = gbase + (u64)i * c + threadIdx.x % 2 * (HD / 2);
            const T* oo = out + ((u64)b * t64 + i) * c + h * HD + threadIdx.x % 2 * (HD / 2);
            for (int d = 0; d < HD / 2; d++) s += ld(go, d) * ld(oo, d);
        }
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        if (threadIdx.x % 2 == 0) {
            stat[0][r] = i < t ? lse[srow + i] * FA_LOG2E : 0.0f;
            stat[1][r] = s;
            if (i < t) delta[srow + i] = s;
        }
    }
    cp_async_wait<0>();
    __syncthreads();
    unsigned qf[HD / 16][4], gf[HD / 16][4];
    fa_frags<HD>(qf, sm + 16 * warp * LD, lane);
    fa_frags<HD>(gf, sm + (FA_ROWS + 16 * warp) * LD, lane);
    const float lse2[2] = {stat[0][16 * warp + g], stat[0][16 * warp + g + 8]};
    const float dl[2] = {stat[1][16 * warp + g], stat[1][16 * warp + g + 8]};
    __syncthreads();

    float dq[HD / 8][4];
#pragma unroll
    for (int nt = 0; nt < HD / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dq[nt][e] = 0.0f;
    const float sl2 = scale * FA_LOG2E;
    const unsigned kend = i0 + FA_ROWS < t ? i0 + FA_ROWS : t, tiles = (kend + N - 1) / N;
    fa_kv_first<N, HD>(sm, kv.k, kv.v, rs, t);
    for (unsigned n = 0; n < tiles; n++) {
        const unsigned j0 = n * N;
        const T* ks = fa_kv_next<N, HD>(sm, kv.k, kv.v, rs, n, tiles, t);
        __syncthreads();
        if (j0 <= w0 + 15) {
            float s[N / 8][4], dp[N / 8][4];
            fa_abt<N, HD>(s, qf, ks, lane);          // S  = Q·Kᵀ
            fa_abt<N, HD>(dp, gf, ks + N * LD, lane); // dP = dO·Vᵀ
            const bool mask = j0 + N - 1 > w0;
#pragma unroll
            for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    unsigned j = j0 + nt * 8 + 2 * q + e % 2, i = w0 + g + 8 * (e / 2);
                    float p = mask && j > i ? 0.0f : exp2f(s[nt][e] * sl2 - lse2[e / 2]);
                    s[nt][e] = p * (dp[nt][e] - dl[e / 2]) * scale; // dS
                }
            fa_ab<N, HD>(dq, s, ks, lane); // dQ += dS·K
        }
        __syncthreads();
    }
    fa_store<HD>(dqkv + (u64)b * t64 * rs + h * HD, rs, dq, w0, t, lane, 1.0f, 1.0f);
}

// dk and dv for 64 key rows of one key/value head; for each query head of its
// group in order, that head's queries, dout and row statistics stream from the
// block's first key to the end, one pipeline over the (head, tile) pairs.
// grid (⌈T/64⌉, K, B), block 128.
template <typename T, int HD>
__device__ void fa_backward_dkdv(const T* qkv, const float* lse, const float* delta,
                                 const T* dout, T* dqkv, u64 t64, u64 c, u64 nh, u64 nkv,
                                 float scale) {
    const int N = FaTile<HD>::N, LD = FaTile<HD>::LD;
    __shared__ __align__(16) T sm[2 * 2 * N * LD]; // [buffer][q | dO][query][LD]; K, V first
    __shared__ float stat[2][2][N];                 // [buffer][lse·log2 e | delta][query]
    const unsigned t = (unsigned)t64, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned g = lane / 4, q = lane % 4, kvh = blockIdx.y, b = blockIdx.z;
    const unsigned j0 = blockIdx.x * FA_ROWS, w0 = j0 + 16 * warp; // block's, warp's first key
    const unsigned group = (unsigned)(nh / nkv);
    const FaKv<HD, T> kv(qkv, t64, c, nkv, b, kvh);
    const u64 rs = kv.rs;
    const T* base = qkv + (u64)b * t64 * rs;  // the batch's first row
    const T* gbase = dout + (u64)b * t64 * c;
    fa_load<FA_ROWS, HD>(sm, kv.k, rs, j0, t);
    fa_load<FA_ROWS, HD>(sm + FA_ROWS * LD, kv.v, rs, j0, t);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    unsigned kf[HD / 16][4], vf[HD / 16][4];
    fa_frags<HD>(kf, sm + 16 * warp * LD, lane);
    fa_frags<HD>(vf, sm + (FA_ROWS + 16 * warp) * LD, lane);
    __syncthreads();

    float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
    for (int nt = 0; nt < HD / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            dk[nt][e] = 0.0f;
            dv[nt][e] = 0.0f;
        }
    const float sl2 = scale * FA_LOG2E;
    // Query tiles a head, and (head, tile) pairs in all: pair n is tile n % tiles
    // of the group's query head n / tiles.
    const unsigned tiles = (t - j0 + N - 1) / N, pairs = group * tiles;
    for (unsigned n = 0; n <= pairs; n++) {
        // Iteration n starts pair n's copies and multiplies pair n − 1's.
        if (n < pairs) {
            const unsigned h = kvh * group + n / tiles, i0 = j0 + n % tiles * N;
            const u64 srow = ((u64)b * nh + h) * t64;
            T* buf = sm + n % 2 * 2 * N * LD;
            fa_load<N, HD>(buf, base + h * HD, rs, i0, t);
            fa_load<N, HD>(buf + N * LD, gbase + h * HD, c, i0, t);
            cp_async_commit();
            if (threadIdx.x < N) {
                unsigned i = i0 + threadIdx.x;
                stat[n % 2][0][threadIdx.x] = i < t ? lse[srow + i] * FA_LOG2E : 0.0f;
                stat[n % 2][1][threadIdx.x] = i < t ? delta[srow + i] : 0.0f;
            }
        }
        if (n == 0) continue;
        if (n < pairs) cp_async_wait<1>();
        else cp_async_wait<0>();
        __syncthreads();
        const unsigned m = n - 1, i0 = j0 + m % tiles * N;
        const T* qs = sm + m % 2 * 2 * N * LD;
        const float* ls = stat[m % 2][0];
        const float* ds = stat[m % 2][1];
        // Warp-uniform: a query tile wholly before this warp's keys is skipped.
        if (i0 + N - 1 >= w0) {
            float s[N / 8][4], dp[N / 8][4];
            fa_abt<N, HD>(s, kf, qs, lane);          // Sᵀ  = K·Qᵀ
            fa_abt<N, HD>(dp, vf, qs + N * LD, lane); // dPᵀ = V·dOᵀ
            const bool mask = i0 < w0 + 15 || i0 + N > t;
#pragma unroll
            for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    unsigned ii = nt * 8 + 2 * q + e % 2, i = i0 + ii, j = w0 + g + 8 * (e / 2);
                    float p = mask && (i < j || i >= t) ? 0.0f : exp2f(s[nt][e] * sl2 - ls[ii]);
                    s[nt][e] = p;
                    dp[nt][e] = p * (dp[nt][e] - ds[ii]) * scale; // dSᵀ
                }
            fa_ab<N, HD>(dv, s, qs + N * LD, lane); // dV += Pᵀ·dO
            fa_ab<N, HD>(dk, dp, qs, lane);         // dK += dSᵀ·Q
        }
        __syncthreads();
    }
    // Where kv.k and kv.v lie in qkv, dk and dv lie in dqkv.
    fa_store<HD>(dqkv + (kv.k - qkv), rs, dk, w0, t, lane, 1.0f, 1.0f);
    fa_store<HD>(dqkv + (kv.v - qkv), rs, dv, w0, t, lane, 1.0f, 1.0f);
}

// Kernel names carry the head size literally (tests/cuda_kernels.rs matches
// names against the host's declarations).
#define FA_FWD_PARAMS(T)                                                                           \
    const T *qkv, T *out, float *lse, u64 t, u64 c, u64 nh, u64 nkv, float scale
#define FA_DQ_PARAMS(T)                                                                            \
    const T *qkv, const T *out, const float *lse, const T *dout, float *delta, T *dqkv, u64 t,     \
        u64 c, u64 nh, u64 nkv, float scale
#define FA_DKDV_PARAMS(T)                                                                          \
    const T *qkv, const float *lse, const float *delta, const T *dout, T *dqkv, u64 t, u64 c,      \
        u64 nh, u64 nkv, float scale
#define FA_FWD(T, HD) fa_forward<T, HD>(qkv, out, lse, t, c, nh, nkv, scale);
#define FA_DQ(T, HD) fa_backward_dq<T, HD>(qkv, out, lse, dout, delta, dqkv, t, c, nh, nkv, scale);
#define FA_DKDV(T, HD) fa_backward_dkdv<T, HD>(qkv, lse, delta, dout, dqkv, t, c, nh, nkv, scale);

#define ATTENTION_FA(S, T)                                                                         \
extern "C" __global__ void attention_fa_forward_hd16_##S(FA_FWD_PARAMS(T)) { FA_FWD(T, 16) }      \
extern "C" __global__ void attention_fa_forward_hd32_##S(FA_FWD_PARAMS(T)) { FA_FWD(T, 32) }      \
extern "C" __global__ void attention_fa_forward_hd48_##S(FA_FWD_PARAMS(T)) { FA_FWD(T, 48) }      \
extern "C" __global__ void attention_fa_forward_hd64_##S(FA_FWD_PARAMS(T)) { FA_FWD(T, 64) }      \
extern "C" __global__ void attention_fa_forward_hd128_##S(FA_FWD_PARAMS(T)) { FA_FWD(T, 128) }    \
extern "C" __global__ void attention_fa_backward_dq_hd16_##S(FA_DQ_PARAMS(T)) { FA_DQ(T, 16) }    \
extern "C" __global__ void attention_fa_backward_dq_hd32_##S(FA_DQ_PARAMS(T)) { FA_DQ(T, 32) }    \
extern "C" __global__ void attention_fa_backward_dq_hd48_##S(FA_DQ_PARAMS(T)) { FA_DQ(T, 48) }    \
extern "C" __global__ void attention_fa_backward_dq_hd64_##S(FA_DQ_PARAMS(T)) { FA_DQ(T, 64) }    \
extern "C" __global__ void attention_fa_backward_dq_hd128_##S(FA_DQ_PARAMS(T)) { FA_DQ(T, 128) } \
extern "C" __global__ void attention_fa_backward_dkdv_hd16_##S(FA_DKDV_PARAMS(T)) {               \
    FA_DKDV(T, 16)                                                                                 \
}                                                                                                  \
extern "C" __global__ void attention_fa_backward_dkdv_hd32_##S(FA_DKDV_PARAMS(T)) {               \
    FA_DKDV(T, 32)                                                                                 \
}                                                                                                  \
extern "C" __global__ void attention_fa_backward_dkdv_hd48_##S(FA_DKDV_PARAMS(T)) {               \
    FA_DKDV(T, 48)                                                                                 \
}                                                                                                  \
extern "C" __global__ void attention_fa_backward_dkdv_hd64_##S(FA_DKDV_PARAMS(T)) {               \
    FA_DKDV(T, 64)                                                                                 \
}                                                                                                  \
extern "C" __global__ void attention_fa_backward_dkdv_hd128_##S(FA_DKDV_PARAMS(T)) {              \
    FA_DKDV(T, 128)                                                                                \
}
ATTENTION_FA(f16, __half)
ATTENTION_FA(bf16, __nv_bfloat16)
