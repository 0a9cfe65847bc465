// Causal attention that never stores the T×T matrix: the forward keeps the
// per-row log-sum-exp, the backward recomputes probabilities from it.
// qkv [B, T, 3C], out [B, T, C], lse [B, H, T] (f32); head dim ≤ 128.
#define ATTENTION(S, T)                                                                            \
extern "C" __global__ void attention_forward_##S(const T* qkv, T* out, float* lse,                 \
        u64 b, u64 t, u64 c, u64 nh, float scale) {                                                \
    u64 k = tid(); if (k >= b * nh * t) return;                                                    \
    u64 hd = c / nh, i = k % t, h = (k / t) % nh, bi = k / (t * nh);                               \
    const T* q = qkv + (bi * t + i) * 3 * c + h * hd;                                              \
    float m = -INFINITY, l = 0.0f, acc[128];                                                       \
    for (u64 d = 0; d < hd; d++) acc[d] = 0.0f;                                                    \
    for (u64 j = 0; j <= i; j++) {                                                                 \
        const T* kr = qkv + (bi * t + j) * 3 * c + c + h * hd;                                     \
        float s = 0.0f;                                                                            \
        for (u64 d = 0; d < hd; d++) s += ld(q, d) * ld(kr, d);                                    \
        s *= scale;                                                                                \
        /* Online softmax: rescale what was accumulated when the max grows. */                     \
        float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn);                             \
        l = l * corr + p;                                                                          \
        for (u64 d = 0; d < hd; d++) acc[d] = acc[d] * corr + p * ld(kr + c, d);                   \
        m = mn;                                                                                    \
    }                                                                                              \
    for (u64 d = 0; d < hd; d++) st(out, (bi * t + i) * c + h * hd + d, acc[d] / l);               \
    lse[(bi * nh + h) * t + i] = m + logf(l);                                                      \
}                                                                                                  \
/* dq: one thread per query row. */                                                                \
extern "C" __global__ void attention_backward_dq_##S(const T* qkv, const T* o, const float* lse,    \
        const T* dout, T* dqkv, u64 b, u64 t, u64 c, u64 nh, float scale) {                        \
    u64 k = tid(); if (k >= b * nh * t) return;                                                    \
    u64 hd = c / nh, i = k % t, h = (k / t) % nh, bi = k / (t * nh);                               \
    const T* q = qkv + (bi * t + i) * 3 * c + h * hd;                                              \
    u64 orow = (bi * t + i) * c + h * hd;                                                          \
    float l = lse[(bi * nh + h) * t + i], di = 0.0f, acc[128];                                     \
    for (u64 d = 0; d < hd; d++) { di += ld(dout, orow + d) * ld(o, orow + d); acc[d] = 0.0f; }     \
    for (u64 j = 0; j <= i; j++) {                                                                 \
        const T* kr = qkv + (bi * t + j) * 3 * c + c + h * hd;                                     \
        float s = 0.0f, dp = 0.0f;                                                                 \
        for (u64 d = 0; d < hd; d++) { s += ld(q, d) * ld(kr, d); dp += ld(dout, orow + d) * ld(kr + c, d); } \
        float p = expf(s * scale - l), ds = p * (dp - di) * scale;                                 \
        for (u64 d = 0; d < hd; d++) acc[d] += ds * ld(kr, d);                                     \
    }                                                                                              \
    for (u64 d = 0; d < hd; d++) st(dqkv, (bi * t + i) * 3 * c + h * hd + d, acc[d]);              \
}                                                                                                  \
/* dk and dv: one thread per key row. */                                                           \
extern "C" __global__ void attention_backward_dkdv_##S(const T* qkv, const T* o, const float* lse, \
        const T* dout, T* dqkv, u64 b, u64 t, u64 c, u64 nh, float scale) {                        \
    u64 k = tid(); if (k >= b * nh * t) return;                                                    \
    u64 hd = c / nh, j = k % t, h = (k / t) % nh, bi = k / (t * nh);                               \
    const T* kr = qkv + (bi * t + j) * 3 * c + c + h * hd;                                         \
    float gk[128], gv[128];                                                                        \
    for (u64 d = 0; d < hd; d++) { gk[d] = 0.0f; gv[d] = 0.0f; }                                   \
    for (u64 i = j; i < t; i++) {                                                                  \
        const T* q = qkv + (bi * t + i) * 3 * c + h * hd;                                          \
        u64 orow = (bi * t + i) * c + h * hd;                                                      \
        float s = 0.0f, dp = 0.0f, di = 0.0f;                                                      \
        for (u64 d = 0; d < hd; d++) {                                                             \
            s += ld(q, d) * ld(kr, d); dp += ld(dout, orow + d) * ld(kr + c, d);                   \
            di += ld(dout, orow + d) * ld(o, orow + d);                                            \
        }                                                                                          \
        float p = expf(s * scale - lse[(bi * nh + h) * t + i]), ds = p * (dp - di) * scale;        \
        for (u64 d = 0; d < hd; d++) { gv[d] += p * ld(dout, orow + d); gk[d] += ds * ld(q, d); }  \
    }                                                                                              \
    for (u64 d = 0; d < hd; d++) {                                                                 \
        st(dqkv, (bi * t + j) * 3 * c + c + h * hd + d, gk[d]);                                    \
        st(dqkv, (bi * t + j) * 3 * c + 2 * c + h * hd + d, gv[d]);                                \
    }                                                                                              \
}
FOR_EACH_DTYPE(ATTENTION)
