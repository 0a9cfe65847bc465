//! `Op::LayerNorm` and its backward (kernels/layernorm.cu): one block of 256
//! threads per row of C; the forward saves each row's mean and rstd in f32.

use super::reduce::column_chunks;
use crate::backend::cuda::launch::{family_kernels, grid, rows, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/layernorm.cu.
    pub const KERNELS = "layernorm" {
        FORWARD = "layernorm_forward" for EVERY_DTYPE,
        BACKWARD_DX = "layernorm_backward_dx" for EVERY_DTYPE,
        BACKWARD_DWDB = "layernorm_backward_dwdb" for EVERY_DTYPE,
        BACKWARD_DWDB_FINISH = "layernorm_backward_dwdb_finish" for EVERY_DTYPE,
    }
}

/// The launch of `Op::LayerNorm { eps }` on `x [R, C]`: ins x [R, C], w [C],
/// b [C]; outs y [R, C], mean [R] f32, rstd [R] f32.
pub fn plan_forward(x: &Shape, eps: f64) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(x);
    let c = cols as u64;
    let args = args![In(0), In(1), In(2), Out(0), Out(1), Out(2), c, eps as f32];
    OpPlan::one(Launch::new(FORWARD, rows(r), args))
}

/// The launches of `Op::LayerNormBackward` on `x [R, C]`: ins dy [R, C],
/// x [R, C], w [C], mean [R] f32, rstd [R] f32; outs dx [R, C], dw [C],
/// db [C]. dx a block per row; dw and db in two fixed-order stages through f32
/// partials [chunks][2][C] in the workspace, as the reductions' column sums.
pub fn plan_backward(x: &Shape) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(x);
    let c = cols as u64;
    let chunks = column_chunks(c, r as u64);
    let dx = args![In(0), In(1), In(2), In(3), In(4), Out(0), c];
    let dwdb = args![In(0), In(1), In(3), In(4), Workspace, r as u64, c, chunks];
    let finish = args![Workspace, Out(1), Out(2), c, chunks];
    OpPlan {
        workspace_bytes: Some(4 * 2 * c * chunks),
        launches: vec![
            Launch::new(BACKWARD_DX, rows(r), dx),
            Launch::new(BACKWARD_DWDB, grid((c * chunks) as usize, 256), dwdb),
            Launch::new(BACKWARD_DWDB_FINISH, grid(c as usize, 256), finish),
        ],
    }
}

/// `Op::LayerNorm { eps }`: [`plan_forward`].
pub(crate) fn layernorm_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    eps: f64,
) -> Result<()> {
    cx.run_plan(dt, &plan_forward(&ins[0].shape, eps), ins, outs)
}

/// `Op::LayerNormBackward`: [`plan_backward`].
pub(crate) fn layernorm_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_backward(&ins[1].shape), ins, outs)
}
