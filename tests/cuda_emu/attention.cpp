// Drives kernels/attention.cu and attention_tc.cu on the CPU (see emu.h) for
// tests/cuda_emulated.rs, replaying the launches that
// src/backend/cuda/ops/attention.rs plans (replay.h), on either path.
// usage: attention DIR
#include "emu.h"

#include "common.cuh"
#include "attention.cu"
#include "attention_tc.cu"

#include "replay.h"

#define ENTRIES(S, T)                                                                            \
    ENTRY(attention_forward_##S) ENTRY(attention_backward_delta_##S)                             \
    ENTRY(attention_backward_dq_##S) ENTRY(attention_backward_dkdv_##S)
// attention_tc.cu: f16 and bf16 only.
#define TC_ENTRIES(S)                                                                            \
    ENTRY(attention_tc_forward_##S) ENTRY(attention_tc_backward_dq_##S)                          \
    ENTRY(attention_tc_backward_dkdv_##S)

int main(int argc, char** argv) {
    return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES) TC_ENTRIES(f16) TC_ENTRIES(bf16)});
}
