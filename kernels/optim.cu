// AdamW over f32 master weights, and Σx² for clipping and the overflow check.
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, u64 n, float lr,
        float b1, float b2, float eps, float decay, float bc1, float bc2, float gscale) {
    u64 i = tid(); if (i >= n) return;
    float gr = g[i] * gscale;
    m[i] = b1 * m[i] + (1.0f - b1) * gr;
    v[i] = b2 * v[i] + (1.0f - b2) * gr * gr;
    p[i] = p[i] * decay - lr * (m[i] / bc1) / (sqrtf(v[i] / bc2) + eps);
}

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
