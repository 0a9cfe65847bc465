// Σx² for clipping and the overflow check, and AdamW over f32 master weights.
// One block per tensor: partial sums added in a fixed order (deterministic);
// an inf or NaN element makes the sum non-finite, which is the overflow check.
#define SUM_SQUARES(S, T)                                                                          \
extern "C" __global__ void sum_squares_##S(const T* x, u64 n, float* result, u64 slot) {           \
    float s = 0.0f;                                                                                \
    for (u64 i = threadIdx.x; i < n; i += 256) { float v = ld(x, i); s += v * v; }                \
    s = block_sum_256(s);                                                                          \
    if (threadIdx.x == 0) result[slot] = s;                                                        \
}
FOR_EACH_DTYPE(SUM_SQUARES)

// AdamW over every parameter in one launch: blockIdx.y picks the parameter,
// the x dimension strides over its elements.
struct AdamSlot {
    u64 param, grad, m, v, n;
    float decay; // 1 − lr·wd for this parameter (1 where it takes no decay)
    float pad;
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
        p[i] = p[i] * s.decay - lr * (m[i] / bc1) / (sqrtf(v[i] / bc2) + eps);
    }
}
