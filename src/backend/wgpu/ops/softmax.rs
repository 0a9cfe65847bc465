//! Softmax over the last dim, and its backward.

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{groups_1d, u, Bind};
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;

const SOFTMAX: Shader = Shader {
    file: "softmax",
    source: include_str!("../../../../shaders/softmax.wgsl"),
    entries: &["forward", "backward"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[SOFTMAX];

const FORWARD: Kernel = SOFTMAX.kernel("forward");
const BACKWARD: Kernel = SOFTMAX.kernel("backward");

/// `x [N, V]` → `y [N, V]`: one thread per row.
pub(crate) fn softmax_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (x, y) = (ins[0], outs[0]);
    let RowDims { rows, cols: v } = RowDims::of(&x.shape);
    gpu.dispatch(
        FORWARD,
        &[u(rows), u(v)],
        &[(1, Bind::T(x)), (3, Bind::T(y))],
        groups_1d(rows),
    )
}

/// `y [N, V]` (the forward's output), `dy [N, V]` → `dx [N, V]`: one thread
/// per row.
pub(crate) fn softmax_backward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (y, dy, dx) = (ins[0], ins[1], outs[0]);
    let RowDims { rows, cols: v } = RowDims::of(&y.shape);
    gpu.dispatch(
        BACKWARD,
        &[u(rows), u(v)],
        &[(1, Bind::T(y)), (2, Bind::T(dy)), (3, Bind::T(dx))],
        groups_1d(rows),
    )
}
