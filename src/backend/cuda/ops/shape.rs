//! Layout copies (kernels/shape.cu): `Op::Transpose`, and `Op::Split` /
//! `Op::Concat` one part at a time, one thread per element. `Op::Reshape` is a
//! view and never reaches a kernel.

use crate::backend::cuda::launch::{family_kernels, grid, launch, numel, ptr, EVERY_DTYPE};
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

/// `Op::Transpose { a, b }`: ins x [outer, A, mid, B, inner]; outs
/// out [outer, B, mid, A, inner].
pub(crate) fn transpose_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    a: usize,
    b: usize,
) -> Result<()> {
    let (x, out) = (ins[0], outs[0]);
    let n = numel(out);
    let (da, mid, db, inner) = transpose_view(&x.shape, a, b);
    let (da, mid, db, inner) = (da as u64, mid as u64, db as u64, inner as u64);
    let cfg = grid(n as usize, 256);
    launch!(
        cx,
        TRANSPOSE,
        dt,
        cfg,
        ptr(x),
        ptr(out),
        n,
        da,
        mid,
        db,
        inner
    )
}

/// `Op::Split { axis, .. }`: ins x [.., whole, ..]; outs one part each
/// [.., part, ..] along `axis`, copied out of x's rows.
pub(crate) fn split_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axis: usize,
) -> Result<()> {
    let x = ins[0];
    let parts: Vec<&Shape> = outs.iter().map(|o| &o.shape).collect();
    for (part, sl) in outs.iter().zip(slices(&x.shape, &parts, axis)) {
        let (n, w, row, off) = dims(&sl);
        let cfg = grid(sl.total, 256);
        launch!(cx, SPLIT_PART, dt, cfg, ptr(x), ptr(part), n, w, row, off)?;
    }
    Ok(())
}

/// `Op::Concat { axis }`: ins one part each [.., part, ..]; outs
/// out [.., whole, ..] along `axis`, each part copied into its rows.
pub(crate) fn concat_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axis: usize,
) -> Result<()> {
    let out = outs[0];
    let parts: Vec<&Shape> = ins.iter().map(|i| &i.shape).collect();
    for (part, sl) in ins.iter().zip(slices(&out.shape, &parts, axis)) {
        let (n, w, row, off) = dims(&sl);
        let cfg = grid(sl.total, 256);
        launch!(
            cx,
            CONCAT_PART,
            dt,
            cfg,
            ptr(part),
            ptr(out),
            n,
            w,
            row,
            off
        )?;
    }
    Ok(())
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
