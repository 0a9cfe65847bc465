// Cross-entropy over rows of V logits, fused with the logits' softmax: one block
// of 256 threads per row (row_stats in common.cuh, shared with softmax.cu). Only
// a row's first `classes` logits are classes: the rest pad the vocabulary to a
// GEMM-friendly width, are left out of the softmax and get a gradient of 0.

// Logits of a row one thread of cross_entropy_fused holds in registers: rows of
// up to 256 × CE_CACHE classes (51200: GPT-2's 50304 padded vocabulary) are read
// from memory once. 200 floats fit the 255 registers a thread may use, and 256
// threads of 255 registers fit the 64K of an SM.
#define CE_CACHE 200

#define CROSS_ENTROPY(S, T)                                                                        \
/* Per-row loss into the f32 workspace; an out-of-range target gives NaN. */                       \
extern "C" __global__ void cross_entropy_rows_##S(const T* logits, const int* targets,             \
                                                   float* row_loss, u64 v, u64 classes) {          \
    u64 r = blockIdx.x; const T* xr = logits + r * v;                                              \
    RowStats rs = row_stats(xr, classes); float m = rs.max, s = rs.sum;                            \
    if (threadIdx.x == 0) {                                                                        \
        int t = targets[r];                                                                        \
        row_loss[r] = (t < 0 || (u64)t >= classes) ? NAN : m + logf(s) - ld(xr, t);                \
    }                                                                                              \
}                                                                                                  \
/* dlogits = (softmax − onehot) · dloss / rows over the classes, 0 past them; */                 \
/* the loss and dloss are f32 whatever the logits' type. */                                        \
extern "C" __global__ void cross_entropy_backward_##S(const T* logits, const int* targets,         \
        const float* dloss, T* dlogits, u64 rows, u64 v, u64 classes) {                            \
    u64 r = blockIdx.x; const T* xr = logits + r * v;                                              \
    RowStats rs = row_stats(xr, classes); float m = rs.max, s = rs.sum;                            \
    float scale = dloss[0] / rows; int t = targets[r];                                             \
    for (u64 j = threadIdx.x; j < v; j += 256) {                                                   \
        float p = j < classes ? expf(ld(xr, j) - m) / s : 0.0f; if ((int)j == t) p -= 1.0f;        \
        st(dlogits, r * v + j, p * scale);                                                         \
    }                                                                                              \
}                                                                                                  \
/* The mean of the row losses, added in row order by one block (deterministic). */                 \
extern "C" __global__ void cross_entropy_mean_##S(const float* row_loss, float* loss, u64 rows) {  \
    float s = 0.0f;                                                                                \
    for (u64 r = threadIdx.x; r < rows; r += 256) s += row_loss[r];                                \
    s = block_sum_256(s);                                                                          \
    if (threadIdx.x == 0) loss[0] = s / rows;                                                      \
}                                                                                                  \
/* A training step's loss and dlogits in one pass over the row (see ce_fused_row). */             \
extern "C" __global__ void cross_entropy_fused_##S(const T* logits,                               \
        const int* targets, const float* dloss, T* dlogits, float* row_loss, u64 rows, u64 v,     \
        u64 classes) {                                                                             \
    u64 r = blockIdx.x;                                                                            \
    ce_fused_row(logits + r * v, dlogits + r * v, targets[r], dloss[0] / rows, v, classes,        \
                 row_loss + r);                                                                    \
}

// One row of cross_entropy_fused: its loss into *row_loss and its dlogits into
// d, which may be the logits' own memory (the training step hands dlogits the
// logits' buffer). Every element is read before any is written — the target's
// logit is kept in shared memory and the block's reductions put barriers
// between the reads and the writes — and each thread writes only elements it
// read itself. Rows of up to 256 × CE_CACHE classes are read once, into
// registers, with the statistics of row_stats (the same order of operations,
// so the loss equals cross_entropy_rows'); longer rows take an online max and
// sum in one read and a second read to write the gradient.
template <typename T>
__device__ void ce_fused_row(const T* xr, T* d, int t, float scale, u64 v, u64 classes,
                             float* row_loss) {
    __shared__ float target_logit;
    if (threadIdx.x == 0) target_logit = NAN;  // stays NaN for a target out of range
    __syncthreads();
    float m, s;
    if (classes <= 256ull * CE_CACHE) {
        float x[CE_CACHE];
        float lm = -INFINITY;
#pragma unroll
        for (int k = 0; k < CE_CACHE; k++) {
            u64 j = threadIdx.x + 256ull * k;
            x[k] = j < classes ? ld(xr, j) : -INFINITY;
            if (j < classes && (int)j == t) target_logit = x[k];
            lm = fmaxf(lm, x[k]);
        }
        m = block_max_256(lm);
        float ls = 0.0f;
#pragma unroll
        for (int k = 0; k < CE_CACHE; k++)
            if (threadIdx.x + 256ull * k < classes) ls += expf(x[k] - m);
        s = block_sum_256(ls);
#pragma unroll
        for (int k = 0; k < CE_CACHE; k++) {
            u64 j = threadIdx.x + 256ull * k;
            if (j < classes) {
                float p = expf(x[k] - m) / s;
                if ((int)j == t) p -= 1.0f;
                st(d, j, p * scale);
            }
        }
    } else {
        // Each thread's running max and its sum scaled to it, then the block's.
        float lm = -INFINITY, ls = 0.0f;
        for (u64 j = threadIdx.x; j < classes; j += 256) {
            float xj = ld(xr, j);
            if ((int)j == t) target_logit = xj;
            if (xj > lm) { ls = ls * expf(lm - xj) + 1.0f; lm = xj; }
            else ls += expf(xj - lm);
        }
        m = block_max_256(lm);
        s = block_sum_256(lm == -INFINITY ? 0.0f : ls * expf(lm - m));
        for (u64 j = threadIdx.x; j < classes; j += 256) {
            float p = expf(ld(xr, j) - m) / s;
            if ((int)j == t) p -= 1.0f;
            st(d, j, p * scale);
        }
    }
    for (u64 j = classes + threadIdx.x; j < v; j += 256) st(d, j, 0.0f);
    if (threadIdx.x == 0) *row_loss = m + logf(s) - target_logit;
}

FOR_EACH_DTYPE(CROSS_ENTROPY)
