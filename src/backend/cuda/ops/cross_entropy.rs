//! `Op::CrossEntropy` and its backward (kernels/cross_entropy.cu), fused with
//! the logits' softmax: one block of 256 threads per row of V. The loss and its
//! gradient are f32 whatever the logits' type.

use crate::backend::cuda::launch::{family_kernels, rows, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/cross_entropy.cu.
    pub const KERNELS = "cross_entropy" {
        ROWS = "cross_entropy_rows" for EVERY_DTYPE,
        MEAN = "cross_entropy_mean" for EVERY_DTYPE,
        BACKWARD = "cross_entropy_backward" for EVERY_DTYPE,
    }
}

/// The launches of `Op::CrossEntropy` on `logits [R, V]`: ins logits [R, V],
/// targets [R] i32; outs loss [1] f32. Each row's loss goes to the workspace
/// (row_loss [R] f32), then one block adds them in row order.
pub fn plan_forward(logits: &Shape) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(logits);
    let row_losses = args![In(0), In(1), Workspace, cols as u64];
    let mean = args![Workspace, Out(0), r as u64];
    OpPlan {
        workspace_bytes: Some(4 * r as u64),
        launches: vec![
            Launch::new(ROWS, rows(r), row_losses),
            Launch::new(MEAN, rows(1), mean),
        ],
    }
}

/// The launch of `Op::CrossEntropyBackward` on `logits [R, V]`: ins
/// logits [R, V], targets [R] i32, dloss [1] f32; outs
/// dlogits [R, V] = (softmax − onehot) · dloss / R.
pub fn plan_backward(logits: &Shape) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(logits);
    let args = args![In(0), In(1), In(2), Out(0), r as u64, cols as u64];
    OpPlan::one(Launch::new(BACKWARD, rows(r), args))
}

/// `Op::CrossEntropy`: [`plan_forward`].
pub(crate) fn cross_entropy_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_forward(&ins[0].shape), ins, outs)
}

/// `Op::CrossEntropyBackward`: [`plan_backward`].
pub(crate) fn cross_entropy_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_backward(&ins[0].shape), ins, outs)
}
