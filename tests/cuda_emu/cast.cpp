// Drives kernels/cast.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs,
// replaying the launches that src/backend/cuda/ops/cast.rs plans (replay.h).
// usage: cast DIR
#include "emu.h"

#include "common.cuh"
#include "cast.cu"

#include "replay.h"

#define CASTS_FROM(S, T) ENTRY(cast_##S##_f32) ENTRY(cast_##S##_f16) ENTRY(cast_##S##_bf16)

int main(int argc, char** argv) { return replay_main(argc, argv, {FOR_EACH_DTYPE(CASTS_FROM)}); }
