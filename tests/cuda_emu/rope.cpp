// Drives kernels/rope.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs,
// replaying the launches that src/backend/cuda/ops/rope.rs plans (replay.h).
// usage: rope DIR
#include "emu.h"

#include "common.cuh"
#include "rope.cu"

#include "replay.h"

#define ENTRIES(S, T) ENTRY(rope_##S)

int main(int argc, char** argv) { return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES)}); }
