// Drives kernels/softmax.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs,
// replaying the launches that src/backend/cuda/ops/softmax.rs plans (replay.h).
// usage: softmax DIR
#include "emu.h"

#include "common.cuh"
#include "softmax.cu"

#include "replay.h"

#define ENTRIES(S, T) ENTRY(softmax_forward_##S) ENTRY(softmax_backward_##S)

int main(int argc, char** argv) { return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES)}); }
