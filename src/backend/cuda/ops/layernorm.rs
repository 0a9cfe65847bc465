//! `Op::LayerNorm` and its backward (kernels/layernorm.cu): one block of 256
//! threads per row of C; the forward saves each row's mean and rstd in f32.

use super::reduce::column_chunks;
use crate::backend::cuda::launch::{family_kernels, grid, launch, ptr, rows, EVERY_DTYPE};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;
use crate::tensor::DType;

family_kernels! {
    /// kernels/layernorm.cu.
    pub const KERNELS = "layernorm" {
        FORWARD = "layernorm_forward" for EVERY_DTYPE,
        BACKWARD_DX = "layernorm_backward_dx" for EVERY_DTYPE,
        BACKWARD_DWDB = "layernorm_backward_dwdb" for EVERY_DTYPE,
        BACKWARD_DWDB_FINISH = "layernorm_backward_dwdb_finish" for EVERY_DTYPE,
    }
}

/// `Op::LayerNorm { eps }`: ins x [R, C], w [C], b [C]; outs y [R, C],
/// mean [R] f32, rstd [R] f32.
pub(crate) fn layernorm_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    eps: f64,
) -> Result<()> {
    let (x, w, b) = (ptr(ins[0]), ptr(ins[1]), ptr(ins[2]));
    let (y, mean, rstd) = (ptr(outs[0]), ptr(outs[1]), ptr(outs[2]));
    let RowDims { rows: r, cols } = RowDims::of(&ins[0].shape);
    let c = cols as u64;
    launch!(
        cx,
        FORWARD,
        dt,
        rows(r),
        x,
        w,
        b,
        y,
        mean,
        rstd,
        c,
        eps as f32
    )
}

/// `Op::LayerNormBackward`: ins dy [R, C], x [R, C], w [C], mean [R] f32,
/// rstd [R] f32; outs dx [R, C], dw [C], db [C]. dx a block per row; dw and db
/// in two fixed-order stages through f32 partials [chunks][2][C] in the
/// workspace, as the reductions' column sums.
pub(crate) fn layernorm_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (dy, x, w, mean, rstd) = (
        ptr(ins[0]),
        ptr(ins[1]),
        ptr(ins[2]),
        ptr(ins[3]),
        ptr(ins[4]),
    );
    let (dx, dw, db) = (ptr(outs[0]), ptr(outs[1]), ptr(outs[2]));
    let RowDims { rows: r, cols } = RowDims::of(&ins[1].shape);
    let c = cols as u64;
    launch!(cx, BACKWARD_DX, dt, rows(r), dy, x, w, mean, rstd, dx, c)?;
    let chunks = column_chunks(c, r as u64);
    let partial = cx.workspace(4 * 2 * c * chunks)?;
    let cfg = grid((c * chunks) as usize, 256);
    let r = r as u64;
    launch!(
        cx,
        BACKWARD_DWDB,
        dt,
        cfg,
        dy,
        x,
        mean,
        rstd,
        partial,
        r,
        c,
        chunks
    )?;
    let cfg = grid(c as usize, 256);
    launch!(
        cx,
        BACKWARD_DWDB_FINISH,
        dt,
        cfg,
        partial,
        dw,
        db,
        c,
        chunks
    )
}
