// Embedding lookup and its backward.
#define EMBEDDING(S, T)                                                                            \
extern "C" __global__ void embedding_forward_##S(const int* ids, const T* table, T* out,           \
                                                  u64 n, u64 c, u64 vocab) {                       \
    u64 k = tid(); if (k >= n * c) return;                                                         \
    int id = ids[k / c];                                                                           \
    st(out, k, (id < 0 || (u64)id >= vocab) ? NAN : ld(table, (u64)id * c + k % c));               \
}                                                                                                  \
/* Deterministic without atomics: thread (j, r) owns column j of the table rows */              \
/* in range r and adds the tokens falling there in token order. Splitting the rows */            \
/* into `ranges` gives c × ranges threads (GPT-2: 768 × 64) instead of c, each */                 \
/* still reading every id (a broadcast load) but writing only its own rows. */                    \
extern "C" __global__ void embedding_backward_##S(const int* ids, const T* dy, T* dtable,          \
                                                   u64 n, u64 c, u64 vocab, u64 ranges) {          \
    u64 k = tid(); if (k >= c * ranges) return;                                                    \
    u64 j = k % c, r = k / c, v0 = r * vocab / ranges, v1 = (r + 1) * vocab / ranges;              \
    for (u64 v = v0; v < v1; v++) st(dtable, v * c + j, 0.0f);                                     \
    for (u64 i = 0; i < n; i++) {                                                                  \
        int id = ids[i];                                                                           \
        if (id >= 0 && (u64)id >= v0 && (u64)id < v1)                                              \
            st(dtable, (u64)id * c + j, ld(dtable, (u64)id * c + j) + ld(dy, i * c + j));          \
    }                                                                                              \
}
FOR_EACH_DTYPE(EMBEDDING)
