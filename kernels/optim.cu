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
