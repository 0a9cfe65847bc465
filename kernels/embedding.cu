// Embedding lookup and its backward.
#define EMBEDDING(S, T)                                                                            \
extern "C" __global__ void embedding_forward_##S(const int* ids, const T* table, T* out,           \
                                                  u64 n, u64 c, u64 vocab) {                       \
    u64 k = tid(); if (k >= n * c) return;                                                         \
    int id = ids[k / c];                                                                           \
    st(out, k, (id < 0 || (u64)id >= vocab) ? NAN : ld(table, (u64)id * c + k % c));               \
}                                                                                                  \
/* One thread per column, tokens added in order: deterministic, no atomics. */                     \
extern "C" __global__ void embedding_backward_##S(const int* ids, const T* dy, T* dtable,          \
                                                   u64 n, u64 c, u64 vocab) {                      \
    u64 j = tid(); if (j >= c) return;                                                             \
    for (u64 v = 0; v < vocab; v++) st(dtable, v * c + j, 0.0f);                                   \
    for (u64 i = 0; i < n; i++) {                                                                  \
        int id = ids[i];                                                                           \
        if (id >= 0 && (u64)id < vocab)                                                            \
            st(dtable, (u64)id * c + j, ld(dtable, (u64)id * c + j) + ld(dy, i * c + j));          \
    }                                                                                              \
}
FOR_EACH_DTYPE(EMBEDDING)
