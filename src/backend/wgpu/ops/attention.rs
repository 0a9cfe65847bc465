//! Causal (grouped-query) self-attention without a T×T matrix: the forward
//! saves each query row's log-sum-exp, from which the backward recomputes the
//! probabilities. Query heads read their key/value head's columns of `qkv` in
//! place, so grouped heads cost no K/V copies.

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{f, groups_1d, u, Bind};
use crate::backend::wgpu::{unsupported, WgpuBackend};
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::attention::AttentionDims;

const ATTENTION: Shader = Shader {
    file: "attention",
    source: include_str!("../../../../shaders/attention.wgsl"),
    entries: &["forward"],
    aliases: Aliases::T,
};

const ATTENTION_BACKWARD: Shader = Shader {
    file: "attention_backward",
    source: include_str!("../../../../shaders/attention_backward.wgsl"),
    entries: &["dq", "dkdv"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[ATTENTION, ATTENTION_BACKWARD];

const FORWARD: Kernel = ATTENTION.kernel("forward");
const DQ: Kernel = ATTENTION_BACKWARD.kernel("dq");
const DKDV: Kernel = ATTENTION_BACKWARD.kernel("dkdv");

/// The sizes of `qkv` and the parameter words (B, T, C, query heads, head
/// dim, scale, key/value heads) shared by forward and backward.
fn launch(qkv: &TensorRef, n_head: usize, n_kv_head: usize) -> Result<(AttentionDims, [u32; 7])> {
    let a = AttentionDims::of(&qkv.shape, n_head, n_kv_head)?;
    let hd = a.head_dim;
    // The kernels keep a row of the head in a fixed 64-float array.
    if hd > 64 {
        return Err(unsupported(format!(
            "attention head size {hd} (at most 64)"
        )));
    }
    let p = [
        u(a.b),
        u(a.t),
        u(a.c),
        u(n_head),
        u(hd),
        f(a.scale_f64()),
        u(n_kv_head),
    ];
    Ok((a, p))
}

/// `qkv [B, T, (H + 2K)·D]` → `out [B, T, H·D]`, `lse [B, H, T]` (f32): one
/// thread per (batch, query head, row).
pub(crate) fn attention_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    n_head: usize,
    n_kv_head: usize,
) -> Result<()> {
    let (qkv, out, lse) = (ins[0], outs[0], outs[1]);
    let (a, p) = launch(qkv, n_head, n_kv_head)?;
    gpu.dispatch(
        FORWARD,
        &p,
        &[(1, Bind::T(qkv)), (2, Bind::T(out)), (3, Bind::T(lse))],
        groups_1d(a.lse_rows()),
    )
}

/// `qkv [B, T, (H + 2K)·D]`, `out [B, T, H·D]`, `lse [B, H, T]`,
/// `dout [B, T, H·D]` → `dqkv [B, T, (H + 2K)·D]`: dq one thread per
/// (batch, query head, query), then dk and dv one thread per (batch,
/// key/value head, key), each summing its group's query heads itself; the
/// two kernels write disjoint columns of `dqkv`.
pub(crate) fn attention_backward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    n_head: usize,
    n_kv_head: usize,
) -> Result<()> {
    let (qkv, out, lse, dout, dqkv) = (ins[0], ins[1], ins[2], ins[3], outs[0]);
    let (a, p) = launch(qkv, n_head, n_kv_head)?;
    let binds = [
        (1, Bind::T(qkv)),
        (2, Bind::T(out)),
        (3, Bind::T(lse)),
        (4, Bind::T(dout)),
        (5, Bind::T(dqkv)),
    ];
    gpu.dispatch(DQ, &p, &binds, groups_1d(a.lse_rows()))?;
    gpu.dispatch(DKDV, &p, &binds, groups_1d(a.b * n_kv_head * a.t))
}
