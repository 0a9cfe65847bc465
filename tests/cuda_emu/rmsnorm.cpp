// Drives kernels/rmsnorm.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs
// and tests/cuda_emulated_mixed.rs, replaying the launches that
// src/backend/cuda/ops/rmsnorm.rs plans (replay.h).
// usage: rmsnorm DIR
#include "emu.h"

#include "common.cuh"
#include "rmsnorm.cu"

#include "replay.h"

#define ENTRIES(S, T)                                                                            \
    ENTRY(rmsnorm_forward_rows_vec_##S) ENTRY(rmsnorm_forward_rows_##S)                          \
    ENTRY(rmsnorm_backward_rows_vec_##S) ENTRY(rmsnorm_backward_rows_##S)                        \
    ENTRY(rmsnorm_forward_##S) ENTRY(rmsnorm_backward_dx_##S) ENTRY(rmsnorm_backward_dw_##S)     \
    ENTRY(rmsnorm_backward_dw_finish_##S)

// The mixed kernels (f32 x, w with low y and dy), named by the low dtype.
#define MIXED(S, T) ENTRIES(mixed_##S, T)

int main(int argc, char** argv) {
    return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES) MIXED(f16, __half) MIXED(bf16, __nv_bfloat16)});
}
