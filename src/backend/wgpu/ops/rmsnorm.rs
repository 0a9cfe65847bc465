//! RMSNorm over the last dim, and its backward.

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{f, groups_1d, u, Bind};
use crate::backend::wgpu::pipeline::Variant;
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;

/// Compiled per (in, out) pair: under autocast f32 x and w with f16/bf16 y.
const RMSNORM: Shader = Shader {
    file: "rmsnorm",
    source: include_str!("../../../../shaders/rmsnorm.wgsl"),
    entries: &["forward"],
    aliases: Aliases::Pair,
};

/// Compiled per (in, out) pair: under autocast f16/bf16 dy with f32 x, w and
/// dx, dw.
const RMSNORM_BACKWARD: Shader = Shader {
    file: "rmsnorm_backward",
    source: include_str!("../../../../shaders/rmsnorm_backward.wgsl"),
    entries: &["dx", "dw"],
    aliases: Aliases::Pair,
};

pub const SHADERS: &[Shader] = &[RMSNORM, RMSNORM_BACKWARD];

const FORWARD: Kernel = RMSNORM.kernel("forward");
const DX: Kernel = RMSNORM_BACKWARD.kernel("dx");
const DW: Kernel = RMSNORM_BACKWARD.kernel("dw");

/// `x [N, C]`, `w [C]` → `y [N, C]`, `rstd [N]` (f32): one thread per row;
/// `y` may be f16/bf16 next to f32 `x` (autocast).
pub(crate) fn rmsnorm_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    eps: f64,
) -> Result<()> {
    let (x, w) = (ins[0], ins[1]);
    let (y, rstd) = (outs[0], outs[1]);
    let RowDims { rows, cols: c } = RowDims::of(&x.shape);
    let binds = [
        (1, Bind::T(x)),
        (2, Bind::T(w)),
        (3, Bind::T(y)),
        (4, Bind::T(rstd)),
    ];
    gpu.variant = Variant::Cast(x.dtype, y.dtype);
    gpu.dispatch(FORWARD, &[u(rows), u(c), f(eps)], &binds, groups_1d(rows))
}

/// `dy [N, C]`, `x [N, C]`, `w [C]`, `rstd [N]` → `dx [N, C]`, `dw [C]`: dx
/// one thread per row, then dw one thread per column with the rows summed in
/// order (deterministic, no atomics). `dy` may be f16/bf16 next to f32 `x`
/// (autocast).
pub(crate) fn rmsnorm_backward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (dy, x, w, rstd) = (ins[0], ins[1], ins[2], ins[3]);
    let (dx, dw) = (outs[0], outs[1]);
    let RowDims { rows, cols: c } = RowDims::of(&x.shape);
    gpu.variant = Variant::Cast(dy.dtype, x.dtype);
    let binds = [
        (1, Bind::T(dy)),
        (2, Bind::T(x)),
        (3, Bind::T(w)),
        (4, Bind::T(rstd)),
        (5, Bind::T(dx)),
    ];
    gpu.dispatch(DX, &[u(rows), u(c)], &binds, groups_1d(rows))?;
    let binds = [
        (1, Bind::T(dy)),
        (2, Bind::T(x)),
        (4, Bind::T(rstd)),
        (6, Bind::T(dw)),
    ];
    gpu.dispatch(DW, &[u(rows), u(c)], &binds, groups_1d(c))
}
