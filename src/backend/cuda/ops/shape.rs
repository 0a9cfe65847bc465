//! Layout copies (kernels/shape.cu): `Op::Transpose`, and `Op::Split` /
//! `Op::Concat` one part at a time, one thread per element. `Op::Reshape` is a
//! view and never reaches a kernel.

use crate::backend::cuda::launch::{family_kernels, grid, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::shape::{slices, transpose_view, Slice};
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/shape.cu.
    pub const KERNELS = "shape" {
        TRANSPOSE = "transpose" for EVERY_DTYPE,
        SPLIT_PART = "split_part" for EVERY_DTYPE,
        CONCAT_PART = "concat_part" for EVERY_DTYPE,
    }
}

/// The launch of `Op::Transpose { a, b }` on `x [outer, A, mid, B, inner]`:
/// ins x; outs out [outer, B, mid, A, inner].
pub fn plan_transpose(x: &Shape, a: usize, b: usize) -> OpPlan {
    let n = x.numel() as u64;
    let (da, mid, db, inner) = transpose_view(x, a, b);
    let (da, mid, db, inner) = (da as u64, mid as u64, db as u64, inner as u64);
    let args = args![In(0), Out(0), n, da, mid, db, inner];
    OpPlan::one(Launch::new(TRANSPOSE, grid(n as usize, 256), args))
}

/// The launches of `Op::Split { axis, .. }` of `x [.., whole, ..]` into
/// `parts`: ins x; outs one part each [.., part, ..] along `axis`, a launch
/// per part copying it out of x's rows.
pub fn plan_split(x: &Shape, parts: &[&Shape], axis: usize) -> OpPlan {
    let launches = slices(x, parts, axis)
        .iter()
        .enumerate()
        .map(|(k, sl)| {
            let (n, w, row, off) = dims(sl);
            let args = args![In(0), Out(k), n, w, row, off];
            Launch::new(SPLIT_PART, grid(sl.total, 256), args)
        })
        .collect();
    OpPlan {
        workspace_bytes: None,
        launches,
    }
}

/// The launches of `Op::Concat { axis }` of `parts` into `out [.., whole, ..]`:
/// ins one part each [.., part, ..]; outs out, a launch per part copying it
/// into its rows along `axis`.
pub fn plan_concat(out: &Shape, parts: &[&Shape], axis: usize) -> OpPlan {
    let launches = slices(out, parts, axis)
        .iter()
        .enumerate()
        .map(|(k, sl)| {
            let (n, w, row, off) = dims(sl);
            let args = args![In(k), Out(0), n, w, row, off];
            Launch::new(CONCAT_PART, grid(sl.total, 256), args)
        })
        .collect();
    OpPlan {
        workspace_bytes: None,
        launches,
    }
}

/// `Op::Transpose { a, b }`: [`plan_transpose`].
pub(crate) fn transpose_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    a: usize,
    b: usize,
) -> Result<()> {
    cx.run_plan(dt, &plan_transpose(&ins[0].shape, a, b), ins, outs)
}

/// `Op::Split { axis, .. }`: [`plan_split`].
pub(crate) fn split_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axis: usize,
) -> Result<()> {
    let parts: Vec<&Shape> = outs.iter().map(|o| &o.shape).collect();
    cx.run_plan(dt, &plan_split(&ins[0].shape, &parts, axis), ins, outs)
}

/// `Op::Concat { axis }`: [`plan_concat`].
pub(crate) fn concat_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axis: usize,
) -> Result<()> {
    let parts: Vec<&Shape> = ins.iter().map(|i| &i.shape).collect();
    cx.run_plan(dt, &plan_concat(&outs[0].shape, &parts, axis), ins, outs)
}

/// A slice's (elements, width, row, offset) as the part kernels take them.
fn dims(sl: &Slice) -> (u64, u64, u64, u64) {
    (
        sl.total as u64,
        sl.width as u64,
        sl.row as u64,
        sl.offset as u64,
    )
}
