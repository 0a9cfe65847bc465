// Casts between every pair of storage types (round to nearest-even on store).
#define CAST_TO(S_FROM, T_FROM, S_TO, T_TO)                                                       \
extern "C" __global__ void cast_##S_FROM##_##S_TO(const T_FROM* x, T_TO* out, u64 n) {             \
    u64 i = tid(); if (i < n) st(out, i, ld(x, i));                                                \
}
#define CAST_FROM(S, T) CAST_TO(S, T, f32, float) CAST_TO(S, T, f16, __half) CAST_TO(S, T, bf16, __nv_bfloat16)
FOR_EACH_DTYPE(CAST_FROM)
