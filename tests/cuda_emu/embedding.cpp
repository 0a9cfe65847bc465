// Drives kernels/embedding.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs,
// replaying the launches that src/backend/cuda/ops/embedding.rs plans (replay.h).
// usage: embedding DIR
#include "emu.h"

#include "common.cuh"
#include "embedding.cu"

#include "replay.h"

#define ENTRIES(S, T) ENTRY(embedding_forward_##S) ENTRY(embedding_backward_##S)

int main(int argc, char** argv) { return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES)}); }
