// Drives kernels/layernorm.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs
// and tests/cuda_emulated_fused.rs, replaying the launches that
// src/backend/cuda/ops/layernorm.rs plans (replay.h).
// usage: layernorm DIR
#include "emu.h"

#include "common.cuh"
#include "layernorm.cu"

#include "replay.h"

#define ENTRIES(S, T)                                                                            \
    ENTRY(layernorm_forward_rows_vec_##S) ENTRY(layernorm_forward_rows_##S)                      \
    ENTRY(layernorm_backward_rows_vec_##S) ENTRY(layernorm_backward_rows_##S)                    \
    ENTRY(layernorm_forward_##S) ENTRY(layernorm_backward_dx_##S)                                \
    ENTRY(layernorm_backward_dwdb_##S) ENTRY(layernorm_backward_dwdb_finish_##S)

// The mixed kernels (f32 x, w, b with low y and dy), named by the low dtype.
#define MIXED(S, T) ENTRIES(mixed_##S, T)

int main(int argc, char** argv) {
    return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES) MIXED(f16, __half) MIXED(bf16, __nv_bfloat16)});
}
