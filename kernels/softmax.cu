// Softmax over rows of V: one block of 256 threads per row (row_stats in
// common.cuh, shared with cross_entropy.cu).

#define SOFTMAX(S, T)                                                                              \
extern "C" __global__ void softmax_forward_##S(const T* x, T* y, u64 v) {                          \
    u64 r = blockIdx.x; const T* xr = x + r * v;                                                   \
    RowStats rs = row_stats(xr, v); float m = rs.max;                                              \
    float inv = 1.0f / rs.sum;                                                                     \
    for (u64 j = threadIdx.x; j < v; j += 256) st(y, r * v + j, expf(ld(xr, j) - m) * inv);        \
}                                                                                                  \
extern "C" __global__ void softmax_backward_##S(const T* y, const T* dy, T* dx, u64 v) {           \
    u64 r = blockIdx.x;                                                                            \
    float s = 0.0f;                                                                                \
    for (u64 j = threadIdx.x; j < v; j += 256) s += ld(y, r * v + j) * ld(dy, r * v + j);          \
    s = block_sum_256(s);                                                                          \
    for (u64 j = threadIdx.x; j < v; j += 256)                                                     \
        st(dx, r * v + j, ld(y, r * v + j) * (ld(dy, r * v + j) - s));                             \
}
FOR_EACH_DTYPE(SOFTMAX)
