// Layout copies: transpose of two axes, and one slice of a split / concat.
#define SHAPE(S, T)                                                                                \
/* [outer, A, mid, B, inner] → [outer, B, mid, A, inner] */                                        \
extern "C" __global__ void transpose_##S(const T* x, T* out, u64 n, u64 da, u64 mid, u64 db, u64 inner) { \
    u64 k = tid(); if (k >= n) return;                                                             \
    u64 r = k % inner, q = k / inner, i = q % da; q /= da; u64 m = q % mid; q /= mid;              \
    u64 j = q % db, p = q / db;                                                                    \
    st(out, k, ld(x, ((((p * da + i) * mid + m) * db + j) * inner) + r));                          \
}                                                                                                  \
extern "C" __global__ void split_part_##S(const T* x, T* out, u64 n, u64 w, u64 row, u64 off) {    \
    u64 k = tid(); if (k < n) st(out, k, ld(x, (k / w) * row + off + k % w));                      \
}                                                                                                  \
extern "C" __global__ void concat_part_##S(const T* x, T* out, u64 n, u64 w, u64 row, u64 off) {   \
    u64 k = tid(); if (k < n) st(out, (k / w) * row + off + k % w, ld(x, k));                      \
}
FOR_EACH_DTYPE(SHAPE)
