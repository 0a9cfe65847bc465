//! Sum and mean over axes, and their adjoint `expand`, for shapes up to rank 6.

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{f, groups_1d, u, Bind};
use crate::backend::wgpu::{unsupported, WgpuBackend};
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::reduce::reduce_plan;
use crate::tensor::Shape;

const REDUCE: Shader = Shader {
    file: "reduce",
    source: include_str!("../../../../shaders/reduce.wgsl"),
    entries: &["sum", "expand"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[REDUCE];

const SUM: Kernel = REDUCE.kernel("sum");
const EXPAND: Kernel = REDUCE.kernel("expand");

/// `x [full]` → `out` without `axes`, summed (`mean`: divided by the count):
/// one thread per output, reduced elements added in row-major order.
pub(crate) fn sum_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axes: &[usize],
    mean: bool,
) -> Result<()> {
    reduce(gpu, SUM, &ins[0].shape, ins[0], outs[0], axes, mean)
}

/// `x` → `out [full]`, `x` repeated along the new `axes`: one thread per
/// output element.
pub(crate) fn expand_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axes: &[usize],
) -> Result<()> {
    reduce(gpu, EXPAND, &outs[0].shape, ins[0], outs[0], axes, false)
}

/// Either direction between `full` and `full` without `axes`; the kernels
/// take the full shape's dims and a bitmask of the reduced axes.
fn reduce(
    gpu: &mut WgpuBackend,
    k: Kernel,
    full: &Shape,
    x: &TensorRef,
    out: &TensorRef,
    axes: &[usize],
    mean: bool,
) -> Result<()> {
    let n = out.shape.numel();
    let r = reduce_plan(full, axes, mean).ok_or_else(|| {
        unsupported(format!(
            "reductions over rank-{} tensors (at most 6)",
            full.rank()
        ))
    })?;
    let mut p = vec![u(n), u(r.rank)];
    p.extend(r.dims.iter().map(|&d| u(d)));
    p.push(r.mask);
    p.push(f(r.scale));
    gpu.dispatch(k, &p, &[(1, Bind::T(x)), (3, Bind::T(out))], groups_1d(n))
}
