// Drives kernels/cross_entropy.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs,
// replaying the launches that src/backend/cuda/ops/cross_entropy.rs plans (replay.h).
// usage: cross_entropy DIR
#include "emu.h"

#include "common.cuh"
#include "cross_entropy.cu"

#include "replay.h"

#define ENTRIES(S, T)                                                                            \
    ENTRY(cross_entropy_rows_##S) ENTRY(cross_entropy_mean_##S) ENTRY(cross_entropy_backward_##S) \
    ENTRY(cross_entropy_fused_##S)

int main(int argc, char** argv) { return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES)}); }
