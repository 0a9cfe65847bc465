// Drives kernels/optim.cu on the CPU (see emu.h) for tests/cuda_emulated.rs,
// replaying the launches that src/backend/cuda/optim.rs plans (replay.h), their
// tables of slots included.
// usage: optim DIR
#include "emu.h"

#include "common.cuh"
#include "optim.cu"

#include "replay.h"

#define ENTRIES(S, T) ENTRY(sum_squares_multi_##S)

int main(int argc, char** argv) {
    return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES) ENTRY(adamw_multi_f32) ENTRY(adamw_q8_f32)});
}
