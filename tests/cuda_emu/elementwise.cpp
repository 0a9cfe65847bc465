// Drives kernels/elementwise.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs
// and tests/cuda_emulated_vec.rs, replaying the launches that
// src/backend/cuda/ops/elementwise.rs plans (replay.h).
// usage: elementwise DIR
#include "emu.h"

#include "common.cuh"
#include "elementwise.cu"

#include "replay.h"

#define ENTRIES(S, T)                                                                            \
    ENTRY(add_##S) ENTRY(mul_##S) ENTRY(scale_##S) ENTRY(fill_##S) ENTRY(accumulate_##S)         \
    ENTRY(gelu_forward_##S) ENTRY(gelu_backward_##S) ENTRY(bias_gelu_forward_##S)                \
    ENTRY(bias_gelu_backward_##S) ENTRY(add_vec_##S) ENTRY(mul_vec_##S) ENTRY(scale_vec_##S)     \
    ENTRY(fill_vec_##S) ENTRY(accumulate_vec_##S) ENTRY(gelu_forward_vec_##S)                    \
    ENTRY(gelu_backward_vec_##S) ENTRY(bias_gelu_forward_vec_##S)                                \
    ENTRY(bias_gelu_backward_vec_##S) ENTRY(silu_forward_##S) ENTRY(silu_backward_##S)           \
    ENTRY(silu_forward_vec_##S) ENTRY(silu_backward_vec_##S)

// The mixed residual add (f32 a and out, low b), named by b's dtype.
#define MIXED(S, T) ENTRY(add_mixed_##S) ENTRY(add_mixed_vec_##S)

int main(int argc, char** argv) {
    return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES) MIXED(f16, __half) MIXED(bf16, __nv_bfloat16)});
}
