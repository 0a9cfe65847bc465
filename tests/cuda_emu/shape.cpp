// Drives kernels/shape.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs,
// replaying the launches that src/backend/cuda/ops/shape.rs plans (replay.h).
// usage: shape DIR
#include "emu.h"

#include "common.cuh"
#include "shape.cu"

#include "replay.h"

#define ENTRIES(S, T) ENTRY(transpose_##S) ENTRY(split_part_##S) ENTRY(concat_part_##S)

int main(int argc, char** argv) { return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES)}); }
