//! LayerNorm over the last dim, and its backward.

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{f, groups_1d, u, Bind};
use crate::backend::wgpu::pipeline::Variant;
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;

/// Compiled per (in, out) pair: under autocast f32 x, w, b with f16/bf16 y.
const LAYERNORM: Shader = Shader {
    file: "layernorm",
    source: include_str!("../../../../shaders/layernorm.wgsl"),
    entries: &["forward"],
    aliases: Aliases::Pair,
};

/// Compiled per (in, out) pair: under autocast f16/bf16 dy with f32 x, w and
/// dx, dw, db.
const LAYERNORM_BACKWARD: Shader = Shader {
    file: "layernorm_backward",
    source: include_str!("../../../../shaders/layernorm_backward.wgsl"),
    entries: &["dx", "dwdb"],
    aliases: Aliases::Pair,
};

pub const SHADERS: &[Shader] = &[LAYERNORM, LAYERNORM_BACKWARD];

const FORWARD: Kernel = LAYERNORM.kernel("forward");
const DX: Kernel = LAYERNORM_BACKWARD.kernel("dx");
const DWDB: Kernel = LAYERNORM_BACKWARD.kernel("dwdb");

/// `x [N, C]`, `w [C]`, `b [C]` → `y [N, C]`, `mean [N]`, `rstd [N]` (f32):
/// one thread per row; `y` may be f16/bf16 next to f32 `x` (autocast).
pub(crate) fn layernorm_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    eps: f64,
) -> Result<()> {
    let (x, w, bias) = (ins[0], ins[1], ins[2]);
    let (y, mean, rstd) = (outs[0], outs[1], outs[2]);
    let RowDims { rows, cols: c } = RowDims::of(&x.shape);
    let binds = [
        (1, Bind::T(x)),
        (2, Bind::T(w)),
        (3, Bind::T(bias)),
        (4, Bind::T(y)),
        (5, Bind::T(mean)),
        (6, Bind::T(rstd)),
    ];
    gpu.variant = Variant::Cast(x.dtype, y.dtype);
    gpu.dispatch(FORWARD, &[u(rows), u(c), f(eps)], &binds, groups_1d(rows))
}

/// `dy [N, C]`, `x [N, C]`, `w [C]`, `mean [N]`, `rstd [N]` → `dx [N, C]`,
/// `dw [C]`, `db [C]`: dx one thread per row, then dw and db one thread per
/// column with the rows summed in order (deterministic, no atomics). `dy`
/// may be f16/bf16 next to f32 `x` (autocast).
pub(crate) fn layernorm_backward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (dy, x, w, mean, rstd) = (ins[0], ins[1], ins[2], ins[3], ins[4]);
    let (dx, dw, db) = (outs[0], outs[1], outs[2]);
    let RowDims { rows, cols: c } = RowDims::of(&x.shape);
    gpu.variant = Variant::Cast(dy.dtype, x.dtype);
    let binds = [
        (1, Bind::T(dy)),
        (2, Bind::T(x)),
        (3, Bind::T(w)),
        (4, Bind::T(mean)),
        (5, Bind::T(rstd)),
        (6, Bind::T(dx)),
    ];
    gpu.dispatch(DX, &[u(rows), u(c)], &binds, groups_1d(rows))?;
    let binds = [
        (1, Bind::T(dy)),
        (2, Bind::T(x)),
        (4, Bind::T(mean)),
        (5, Bind::T(rstd)),
        (6, Bind::T(dw)),
        (7, Bind::T(db)),
    ];
    gpu.dispatch(DWDB, &[u(rows), u(c)], &binds, groups_1d(c))
}
