//! Mean cross-entropy over rows of logits, the softmax fused in and never
//! stored; the loss and its gradient are f32 whatever the logits' dtype. Only
//! the first `classes` columns are classes (the rest pad the vocabulary).

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{groups_1d, u, Bind};
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;

const CROSS_ENTROPY: Shader = Shader {
    file: "cross_entropy",
    source: include_str!("../../../../shaders/cross_entropy.wgsl"),
    entries: &["forward", "backward", "fused"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[CROSS_ENTROPY];

const FORWARD: Kernel = CROSS_ENTROPY.kernel("forward");
const BACKWARD: Kernel = CROSS_ENTROPY.kernel("backward");
const FUSED: Kernel = CROSS_ENTROPY.kernel("fused");

/// `logits [N, V]`, `targets [N] i32` → `loss []` (f32): one workgroup, so
/// that the row losses are added in a fixed order.
pub(crate) fn cross_entropy_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    classes: usize,
) -> Result<()> {
    let (logits, targets, loss) = (ins[0], ins[1], outs[0]);
    let RowDims { rows, cols: v } = RowDims::of(&logits.shape);
    gpu.dispatch(
        FORWARD,
        &[u(rows), u(v), u(classes)],
        &[
            (1, Bind::T(logits)),
            (2, Bind::T(targets)),
            (5, Bind::T(loss)),
        ],
        (1, 1, 1),
    )
}

/// `logits [N, V]`, `targets [N] i32`, `dloss []` (f32) → `dlogits [N, V]`:
/// one thread per row.
pub(crate) fn cross_entropy_backward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    classes: usize,
) -> Result<()> {
    let (logits, targets, dloss, dlogits) = (ins[0], ins[1], ins[2], outs[0]);
    let RowDims { rows, cols: v } = RowDims::of(&logits.shape);
    let binds = [
        (1, Bind::T(logits)),
        (2, Bind::T(targets)),
        (3, Bind::T(dloss)),
        (4, Bind::T(dlogits)),
    ];
    gpu.dispatch(
        BACKWARD,
        &[u(rows), u(v), u(classes)],
        &binds,
        groups_1d(rows),
    )
}

/// `logits [N, V]`, `targets [N] i32`, `dloss []` (f32) → `loss []` (f32),
/// `dlogits [N, V]` (possibly the logits' own memory): one workgroup, the loss
/// added as [`cross_entropy_forward`] adds it.
pub(crate) fn cross_entropy_fused(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    classes: usize,
) -> Result<()> {
    let (logits, targets, dloss) = (ins[0], ins[1], ins[2]);
    let (loss, dlogits) = (outs[0], outs[1]);
    let RowDims { rows, cols: v } = RowDims::of(&logits.shape);
    let binds = [
        (1, Bind::T(logits)),
        (2, Bind::T(targets)),
        (3, Bind::T(dloss)),
        (4, Bind::T(dlogits)),
        (5, Bind::T(loss)),
    ];
    gpu.dispatch(FUSED, &[u(rows), u(v), u(classes)], &binds, (1, 1, 1))
}
