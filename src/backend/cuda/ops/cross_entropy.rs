//! `Op::CrossEntropy` and its backward (kernels/cross_entropy.cu), fused with
//! the logits' softmax: one block of 256 threads per row of V. The loss and its
//! gradient are f32 whatever the logits' type.

use crate::backend::cuda::launch::{family_kernels, launch, ptr, rows, EVERY_DTYPE};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;
use crate::tensor::DType;

family_kernels! {
    /// kernels/cross_entropy.cu.
    pub const KERNELS = "cross_entropy" {
        ROWS = "cross_entropy_rows" for EVERY_DTYPE,
        MEAN = "cross_entropy_mean" for EVERY_DTYPE,
        BACKWARD = "cross_entropy_backward" for EVERY_DTYPE,
    }
}

/// `Op::CrossEntropy`: ins logits [R, V], targets [R] i32; outs loss [1] f32.
/// Each row's loss goes to the workspace (row_loss [R] f32), then one block
/// adds them in row order.
pub(crate) fn cross_entropy_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (logits, targets, loss) = (ins[0], ins[1], outs[0]);
    let RowDims { rows: r, cols } = RowDims::of(&logits.shape);
    let v = cols as u64;
    let row_loss = cx.workspace(4 * r as u64)?;
    launch!(
        cx,
        ROWS,
        dt,
        rows(r),
        ptr(logits),
        ptr(targets),
        row_loss,
        v
    )?;
    launch!(cx, MEAN, dt, rows(1), row_loss, ptr(loss), r as u64)
}

/// `Op::CrossEntropyBackward`: ins logits [R, V], targets [R] i32, dloss [1]
/// f32; outs dlogits [R, V] = (softmax − onehot) · dloss / R.
pub(crate) fn cross_entropy_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (logits, targets, dloss, dlogits) = (ptr(ins[0]), ptr(ins[1]), ptr(ins[2]), ptr(outs[0]));
    let RowDims { rows: r, cols } = RowDims::of(&ins[0].shape);
    let v = cols as u64;
    let cfg = rows(r);
    launch!(cx, BACKWARD, dt, cfg, logits, targets, dloss, dlogits, r as u64, v)
}
