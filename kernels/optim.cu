// Σx² over every gradient in one launch: the clipping norm and, with a loss
// scale, the overflow check (an inf or NaN makes the sum non-finite), so the
// scaler needs no pass of its own; the unscale is folded into AdamW below.
// blockIdx.y picks the tensor; each block writes one partial sum, added in a
// fixed order on the host (deterministic).
struct SumSlot {
    u64 ptr, n;
};

#define SUM_SQUARES(S, T)                                                                          \
extern "C" __global__ void sum_squares_multi_##S(const SumSlot* slots, float* partial) {          \
    const SumSlot sl = slots[blockIdx.y];                                                          \
    const T* x = (const T*)sl.ptr;                                                                 \
    float s = 0.0f;                                                                                \
    for (u64 i = (u64)blockIdx.x * 256 + threadIdx.x; i < sl.n; i += (u64)gridDim.x * 256) {      \
        float v = ld(x, i);                                                                        \
        s += v * v;                                                                                \
    }                                                                                              \
    s = block_sum_256(s);                                                                          \
    if (threadIdx.x == 0) partial[(u64)blockIdx.y * gridDim.x + blockIdx.x] = s;                   \
}
FOR_EACH_DTYPE(SUM_SQUARES)

// AdamW over every parameter in one launch: blockIdx.y picks the parameter,
// the x dimension strides over its elements. Where a parameter has a
// low-precision copy (the weights autocast's forward reads), the updated value
// is also stored there, rounded as cast.cu rounds, so no cast runs per step.
struct AdamSlot {
    u64 param, grad, m, v, n;
    u64 shadow;      // 0: none
    float decay;     // 1 − lr·wd for this parameter (1 where it takes no decay)
    unsigned kind;   // the copy's type: 1 f16, 2 bf16
};
extern "C" __global__ void adamw_multi_f32(const AdamSlot* slots, float lr, float b1, float b2,
        float eps, float bc1, float bc2, float gscale) {
    const AdamSlot s = slots[blockIdx.y];
    float* p = (float*)s.param; const float* g = (const float*)s.grad;
    float* m = (float*)s.m; float* v = (float*)s.v;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < s.n; i += (u64)gridDim.x * blockDim.x) {
        float gr = g[i] * gscale;
        m[i] = b1 * m[i] + (1.0f - b1) * gr;
        v[i] = b2 * v[i] + (1.0f - b2) * gr * gr;
        float pn = p[i] * s.decay - lr * (m[i] / bc1) / (sqrtf(v[i] / bc2) + eps);
        p[i] = pn;
        if (s.kind == 1) st((__half*)s.shadow, i, pn);
        else if (s.kind == 2) st((__nv_bfloat16*)s.shadow, i, pn);
    }
}

// AdamW over 8-bit state (src/optim/quant.rs is the reference): blockIdx.x a
// block of 2048 elements of the parameter blockIdx.y picks, 256 threads of 8
// elements. Old codes decode with the block's old scales, the moments advance
// and the weights update in f32, then the block's new scales (its largest |m|
// and v) and codes are written; the code book is searched by comparisons.
struct AdamQ8Slot {
    u64 param, grad, m, v, scales, n, nb;
    u64 shadow;      // 0: none
    float decay;
    unsigned kind;   // the copy's type: 1 f16, 2 bf16
};

__device__ unsigned q8_nearest(const float* c, unsigned len, float a) {
    unsigned lo = 0, hi = len;
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (c[mid] <= a) lo = mid; else hi = mid;
    }
    if (lo + 1 < len && c[lo + 1] - a < a - c[lo]) lo++;
    return lo;
}

extern "C" __global__ void adamw_q8_f32(const AdamQ8Slot* slots, const float* book, float lr,
        float b1, float b2, float eps, float bc1, float bc2, float gscale) {
    __shared__ float cb[384];
    for (unsigned i = threadIdx.x; i < 384; i += 256) cb[i] = book[i];
    __syncthreads();
    const AdamQ8Slot s = slots[blockIdx.y];
    const u64 blk = blockIdx.x;
    if (blk >= s.nb) return;  // the whole block: no barrier is left waiting
    float* p = (float*)s.param; const float* g = (const float*)s.grad;
    unsigned char* mq = (unsigned char*)s.m; unsigned char* vq = (unsigned char*)s.v;
    float* sc = (float*)s.scales;
    const float sm_old = sc[blk], sv_old = sc[s.nb + blk];
    const u64 base = blk * 2048 + threadIdx.x * 8;
    float m[8], v[8], am = 0.0f, av = 0.0f;
    for (int e = 0; e < 8; e++) {
        const u64 i = base + e;
        if (i >= s.n) break;
        const unsigned qm = mq[i];
        float mo = cb[qm & 127] * sm_old;
        if (qm & 128) mo = -mo;
        const float vo = cb[128 + vq[i]] * sv_old;
        const float gr = g[i] * gscale;
        m[e] = b1 * mo + (1.0f - b1) * gr;
        v[e] = b2 * vo + (1.0f - b2) * gr * gr;
        const float pn = p[i] * s.decay - lr * (m[e] / bc1) / (sqrtf(v[e] / bc2) + eps);
        p[i] = pn;
        if (s.kind == 1) st((__half*)s.shadow, i, pn);
        else if (s.kind == 2) st((__nv_bfloat16*)s.shadow, i, pn);
        am = fmaxf(am, fabsf(m[e]));
        av = fmaxf(av, v[e]);
    }
    const float sm = block_max_256(am);
    const float sv = block_max_256(av);
    for (int e = 0; e < 8; e++) {
        const u64 i = base + e;
        if (i >= s.n) break;
        unsigned qm = 0, qv = 0;
        if (sm > 0.0f) {
            qm = q8_nearest(cb, 128, fabsf(m[e] / sm));
            if (qm != 0 && m[e] < 0.0f) qm |= 128;
        }
        if (sv > 0.0f) qv = q8_nearest(cb + 128, 256, v[e] / sv);
        mq[i] = (unsigned char)qm;
        vq[i] = (unsigned char)qv;
    }
    if (threadIdx.x == 0) { sc[blk] = sm; sc[s.nb + blk] = sv; }
}
