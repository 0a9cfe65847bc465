// Softmax and cross-entropy over rows of V: one block of 256 threads per row.

// A row's max and Σ exp(x − max), reduced over the block in a fixed order.
struct RowStats { float max; float sum; };

template <typename T>
__device__ RowStats row_stats(const T* xr, u64 v) {
    float m = -INFINITY;
    for (u64 j = threadIdx.x; j < v; j += 256) m = fmaxf(m, ld(xr, j));
    m = block_max_256(m);
    float s = 0.0f;
    for (u64 j = threadIdx.x; j < v; j += 256) s += expf(ld(xr, j) - m);
    RowStats r; r.max = m; r.sum = block_sum_256(s);
    return r;
}

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
}                                                                                                  \
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
FOR_EACH_DTYPE(SOFTMAX)
