// Sum / mean over a set of axes and the adjoint expand, for shapes up to rank 6;
// column sums (leading axes of a contiguous tensor: bias gradients) have their
// own tiled kernels.
struct Dims6 { u64 d[6]; };

// The flat index of output o's r-th summed element. I is u64, or unsigned when
// the whole tensor has fewer than 2³² elements (a 32-bit div/mod is a fraction
// of a 64-bit one's cost).
template <typename I>
__device__ I full_index(I o, I r, unsigned rank, const Dims6& dims, unsigned mask) {
    I idx = 0, stride = 1;
    for (unsigned k = 0; k < rank; k++) {
        unsigned ax = rank - 1 - k;
        I d = (I)dims.d[ax], c;
        if ((mask >> ax) & 1) { c = r % d; r /= d; } else { c = o % d; o /= d; }
        idx += c * stride; stride *= d;
    }
    return idx;
}

// Thread k = (chunk ch, output o) adds chunk ch of o's elements in order.
template <typename T, typename I>
__device__ void sum_partial_body(const T* x, float* partial, I n, unsigned rank, const Dims6& dims,
                                 unsigned mask, I count, I chunks, I k) {
    I o = k % n, ch = k / n, r1 = (I)((u64)(ch + 1) * count / chunks);
    float s = 0.0f;
    for (I r = (I)((u64)ch * count / chunks); r < r1; r++) s += ld(x, full_index<I>(o, r, rank, dims, mask));
    partial[k] = s;
}

// Column sums of x [rows, cols] into f32 partials [slabs, cols]: a block is 8
// row lanes × 32 column lanes, each thread owning V adjacent columns (V > 1: one
// 16-byte load a row), so block (strip s, slab g) covers columns
// [32·V·s, 32·V·(s + 1)) of rows [rps·g, rps·(g + 1)). Row lane ty adds rows
// ty, ty + 8, .. of the slab in order; the 8 row lanes are then added in order
// through shared memory: a fixed order, the same result every run. 32-bit
// indices: the host takes this path only for rows · cols < 2³².
template <typename T, int V>
__device__ void colsum_partial_body(const T* x, float* partial, unsigned rows, unsigned cols,
                                    unsigned rps) {
    __shared__ float lanes[8 * 8 * 32];  // [row lane][column in V][column lane]
    unsigned lane = threadIdx.x & 31, ty = threadIdx.x >> 5;
    unsigned c0 = (blockIdx.x * 32 + lane) * V, r0 = blockIdx.y * rps;
    unsigned r1 = r0 + rps < rows ? r0 + rps : rows;
    float acc[V];
#pragma unroll
    for (int k = 0; k < V; k++) acc[k] = 0.0f;
    if (c0 < cols) {
        for (unsigned r = r0 + ty; r < r1; r += 8) {
            if constexpr (V > 1) {
                Pack16<T> p = ld16(x + r * cols + c0);
#pragma unroll
                for (int k = 0; k < V; k++) acc[k] += ld(p.v, k);
            } else {
                acc[0] += ld(x, r * cols + c0);
            }
        }
    }
#pragma unroll
    for (int k = 0; k < V; k++) lanes[(ty * V + k) * 32 + lane] = acc[k];
    __syncthreads();
    // Thread t < 32·V finishes the strip's column t.
    unsigned t = threadIdx.x, c = blockIdx.x * 32 * V + t;
    if (t < 32 * V && c < cols) {
        unsigned k = t % V, l = t / V;
        float s = 0.0f;
        for (unsigned y = 0; y < 8; y++) s += lanes[(y * V + k) * 32 + l];
        partial[blockIdx.y * cols + c] = s;
    }
}

#define REDUCE(S, T)                                                                               \
/* Two stages, deterministic: thread (o, ch) adds chunk ch of output o's elements */              \
/* in row-major order into an f32 partial; then each output adds its chunks in */                 \
/* order. `wide`: the tensor has 2³² elements or more, so indices need 64 bits. */                \
extern "C" __global__ void sum_partial_##S(const T* x, float* partial, u64 n, u64 rank,           \
        Dims6 dims, unsigned mask, u64 count, u64 chunks, unsigned wide) {                         \
    u64 k = tid(); if (k >= n * chunks) return;                                                    \
    if (wide) sum_partial_body<T, u64>(x, partial, n, (unsigned)rank, dims, mask, count, chunks, k); \
    else sum_partial_body<T, unsigned>(x, partial, (unsigned)n, (unsigned)rank, dims, mask,        \
                                       (unsigned)count, (unsigned)chunks, (unsigned)k);            \
}                                                                                                  \
extern "C" __global__ void sum_finish_##S(const float* partial, T* out, u64 n, u64 chunks,       \
                                           float scale) {                                          \
    u64 o = tid(); if (o >= n) return;                                                             \
    float s = 0.0f;                                                                                \
    for (u64 ch = 0; ch < chunks; ch++) s += partial[ch * n + o];                                  \
    st(out, o, s * scale);                                                                         \
}                                                                                                  \
/* Column sums, 16-byte loads: cols a multiple of 16 / sizeof(T), x 16-byte aligned. */            \
extern "C" __global__ void colsum_partial_vec_##S(const T* x, float* partial, unsigned rows,      \
                                                   unsigned cols, unsigned rps) {                  \
    colsum_partial_body<T, 16 / sizeof(T)>(x, partial, rows, cols, rps);                           \
}                                                                                                  \
extern "C" __global__ void colsum_partial_##S(const T* x, float* partial, unsigned rows,          \
                                               unsigned cols, unsigned rps) {                      \
    colsum_partial_body<T, 1>(x, partial, rows, cols, rps);                                        \
}                                                                                                  \
/* out [cols] = scale · Σ_g partial [g, cols], the slabs added in order. */                        \
extern "C" __global__ void colsum_finish_##S(const float* partial, T* out, unsigned cols,         \
                                              unsigned slabs, float scale) {                       \
    unsigned c = blockIdx.x * blockDim.x + threadIdx.x; if (c >= cols) return;                     \
    float s = 0.0f;                                                                                \
    for (unsigned g = 0; g < slabs; g++) s += partial[g * cols + c];                               \
    st(out, c, s * scale);                                                                         \
}                                                                                                  \
extern "C" __global__ void expand_##S(const T* x, T* out, u64 n, u64 rank, Dims6 dims, unsigned mask) { \
    u64 k = tid(); if (k >= n) return;                                                             \
    u64 rem = k, idx = 0, stride = 1;                                                              \
    for (u64 j = 0; j < rank; j++) {                                                               \
        u64 ax = rank - 1 - j, d = dims.d[ax], c = rem % d; rem /= d;                              \
        if (!((mask >> ax) & 1)) { idx += c * stride; stride *= d; }                               \
    }                                                                                              \
    st(out, k, ld(x, idx));                                                                        \
}
FOR_EACH_DTYPE(REDUCE)
