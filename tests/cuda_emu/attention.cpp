// Drives kernels/attention.cu and attention_fa.cu on the CPU (see emu.h) for
// tests/cuda_emulated.rs, replaying the launches that
// src/backend/cuda/ops/attention.rs plans (replay.h), on either path.
// usage: attention DIR
#include "emu.h"

#include "common.cuh"
#include "attention.cu"
#include "attention_fa.cu"

#include "replay.h"

#define ENTRIES(S, T)                                                                            \
    ENTRY(attention_forward_##S) ENTRY(attention_backward_delta_##S)                             \
    ENTRY(attention_backward_dq_##S) ENTRY(attention_backward_dkdv_##S)
// attention_fa.cu: f16 and bf16, one set per head size.
#define FA_HEAD(S, HD)                                                                           \
    ENTRY(attention_fa_forward_hd##HD##_##S) ENTRY(attention_fa_backward_dq_hd##HD##_##S)        \
    ENTRY(attention_fa_backward_dkdv_hd##HD##_##S)
#define FA_ENTRIES(S)                                                                            \
    FA_HEAD(S, 16) FA_HEAD(S, 32) FA_HEAD(S, 48) FA_HEAD(S, 64) FA_HEAD(S, 128)

int main(int argc, char** argv) {
    return replay_main(argc, argv, {FOR_EACH_DTYPE(ENTRIES) FA_ENTRIES(f16) FA_ENTRIES(bf16)});
}
