// Drives kernels/reduce.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs,
// replaying the launches that src/backend/cuda/ops/reduce.rs plans (replay.h).
// usage: reduce DIR
#include "emu.h"

#include "common.cuh"
#include "reduce.cu"

#include "replay.h"

#define ENTRIES(S, T)                                                                            \
    ENTRY(sum_partial_##S) ENTRY(sum_finish_##S) ENTRY(colsum_partial_vec_##S)                   \
    ENTRY(colsum_partial_##S) ENTRY(colsum_finish_##S) ENTRY(expand_##S)

int main(int argc, char** argv) { return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES)}); }
