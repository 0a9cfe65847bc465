// Cross-entropy over rows of V, fused with the logits' softmax: one block of
// 256 threads per row (row_stats in common.cuh, shared with softmax.cu).

#define CROSS_ENTROPY(S, T)                                                                        \
/* Per-row loss into the f32 workspace; an out-of-range target gives NaN. */                       \
extern "C" __global__ void cross_entropy_rows_##S(const T* logits, const int* targets,             \
                                                   float* row_loss, u64 v) {                       \
    u64 r = blockIdx.x; const T* xr = logits + r * v;                                              \
    RowStats rs = row_stats(xr, v); float m = rs.max, s = rs.sum;                                  \
    if (threadIdx.x == 0) {                                                                        \
        int t = targets[r];                                                                        \
        row_loss[r] = (t < 0 || (u64)t >= v) ? NAN : m + logf(s) - ld(xr, t);                      \
    }                                                                                              \
}                                                                                                  \
/* dlogits = (softmax − onehot) · dloss / rows, fused with the logits' softmax; */               \
/* the loss and dloss are f32 whatever the logits' type. */                                        \
extern "C" __global__ void cross_entropy_backward_##S(const T* logits, const int* targets,         \
        const float* dloss, T* dlogits, u64 rows, u64 v) {                                         \
    u64 r = blockIdx.x; const T* xr = logits + r * v;                                              \
    RowStats rs = row_stats(xr, v); float m = rs.max, s = rs.sum;                                  \
    float scale = dloss[0] / rows; int t = targets[r];                                             \
    for (u64 j = threadIdx.x; j < v; j += 256) {                                                   \
        float p = expf(ld(xr, j) - m) / s; if ((int)j == t) p -= 1.0f;                             \
        st(dlogits, r * v + j, p * scale);                                                         \
    }                                                                                              \
}                                                                                                  \
/* The mean of the row losses, added in row order by one block (deterministic). */                 \
extern "C" __global__ void cross_entropy_mean_##S(const float* row_loss, float* loss, u64 rows) {  \
    float s = 0.0f;                                                                                \
    for (u64 r = threadIdx.x; r < rows; r += 256) s += row_loss[r];                                \
    s = block_sum_256(s);                                                                          \
    if (threadIdx.x == 0) loss[0] = s / rows;                                                      \
}
FOR_EACH_DTYPE(CROSS_ENTROPY)
