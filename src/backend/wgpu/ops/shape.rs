//! Layout copies: transpose, split and concat (reshape is a view, no kernel).

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{groups_1d, u, Bind};
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::shape::{slices, transpose_view};
use crate::tensor::Shape;

const SHAPE: Shader = Shader {
    file: "shape",
    source: include_str!("../../../../shaders/shape.wgsl"),
    entries: &["transpose", "split_part", "concat_part"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[SHAPE];

const TRANSPOSE: Kernel = SHAPE.kernel("transpose");
const SPLIT_PART: Kernel = SHAPE.kernel("split_part");
const CONCAT_PART: Kernel = SHAPE.kernel("concat_part");

/// `x` → `out` with axes `a` and `b` swapped, seen as
/// `[outer, A, mid, B, inner]` → `[outer, B, mid, A, inner]`: one thread per
/// output element.
pub(crate) fn transpose_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    a: usize,
    b: usize,
) -> Result<()> {
    let (x, out) = (ins[0], outs[0]);
    let n = out.shape.numel();
    let (da, mid, db, inner) = transpose_view(&x.shape, a, b);
    let p = [u(n), u(da), u(mid), u(db), u(inner)];
    gpu.dispatch(
        TRANSPOSE,
        &p,
        &[(1, Bind::T(x)), (3, Bind::T(out))],
        groups_1d(n),
    )
}

/// `x` → one part per output, cut along `axis`: one kernel per part, one
/// thread per element of it.
pub(crate) fn split_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axis: usize,
) -> Result<()> {
    let x = ins[0];
    let parts: Vec<&Shape> = outs.iter().map(|o| &o.shape).collect();
    for (part, sl) in outs.iter().zip(slices(&x.shape, &parts, axis)) {
        let p = [u(sl.total), u(sl.width), u(sl.row), u(sl.offset)];
        gpu.dispatch(
            SPLIT_PART,
            &p,
            &[(1, Bind::T(x)), (3, Bind::T(part))],
            groups_1d(sl.total),
        )?;
    }
    Ok(())
}

/// Parts → `out`, joined along `axis`: one kernel per part, one thread per
/// element of it.
pub(crate) fn concat_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axis: usize,
) -> Result<()> {
    let out = outs[0];
    let parts: Vec<&Shape> = ins.iter().map(|i| &i.shape).collect();
    for (part, sl) in ins.iter().zip(slices(&out.shape, &parts, axis)) {
        let p = [u(sl.total), u(sl.width), u(sl.row), u(sl.offset)];
        gpu.dispatch(
            CONCAT_PART,
            &p,
            &[(1, Bind::T(part)), (3, Bind::T(out))],
            groups_1d(sl.total),
        )?;
    }
    Ok(())
}
