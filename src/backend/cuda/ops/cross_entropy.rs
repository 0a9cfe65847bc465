//! The cross-entropy ops (kernels/cross_entropy.cu), fused with the logits'
//! softmax: one block of 256 threads per row of V, over the row's first
//! `classes` logits (the rest pad the vocabulary: no class, gradient 0). The
//! loss and its gradient are f32 whatever the logits' type.

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
        FUSED = "cross_entropy_fused" for EVERY_DTYPE,
    }
}

/// Classes per row that `cross_entropy_fused` reads from memory only once
/// (256 threads × `CE_CACHE` in kernels/cross_entropy.cu); longer rows are
/// read twice.
pub const FUSED_CACHED_CLASSES: usize = 256 * 200;

/// The launches of `Op::CrossEntropy` on `logits [R, V]`: ins logits [R, V],
/// targets [R] i32; outs loss [1] f32. Each row's loss goes to the workspace
/// (row_loss [R] f32), then one block adds them in row order.
pub fn plan_forward(logits: &Shape, classes: usize) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(logits);
    let row_losses = args![In(0), In(1), Workspace, cols as u64, classes as u64];
    OpPlan {
        workspace_bytes: Some(4 * r as u64),
        launches: vec![Launch::new(ROWS, rows(r), row_losses), mean(r)],
    }
}

/// The mean of the R row losses in the workspace into `Out(0)`.
fn mean(r: usize) -> Launch {
    Launch::new(MEAN, rows(1), args![Workspace, Out(0), r as u64])
}

/// The launch of `Op::CrossEntropyBackward` on `logits [R, V]`: ins
/// logits [R, V], targets [R] i32, dloss [1] f32; outs
/// dlogits [R, V] = (softmax − onehot) · dloss / R.
pub fn plan_backward(logits: &Shape, classes: usize) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(logits);
    let args = args![
        In(0),
        In(1),
        In(2),
        Out(0),
        r as u64,
        cols as u64,
        classes as u64
    ];
    OpPlan::one(Launch::new(BACKWARD, rows(r), args))
}

/// The launches of `Op::CrossEntropyFused` on `logits [R, V]`: ins
/// logits [R, V], targets [R] i32, dloss [1] f32; outs loss [1] f32,
/// dlogits [R, V] (the logits' own memory when the executor donates it).
/// One pass per row writes its dlogits and its loss into the workspace
/// (row_loss [R] f32), then one block adds the losses in row order.
pub fn plan_fused(logits: &Shape, classes: usize) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(logits);
    let row = args![
        In(0),
        In(1),
        In(2),
        Out(1),
        Workspace,
        r as u64,
        cols as u64,
        classes as u64
    ];
    OpPlan {
        workspace_bytes: Some(4 * r as u64),
        launches: vec![Launch::new(FUSED, rows(r), row), mean(r)],
    }
}

/// `Op::CrossEntropy`: [`plan_forward`].
pub(crate) fn cross_entropy_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    classes: usize,
) -> Result<()> {
    cx.run_plan(dt, &plan_forward(&ins[0].shape, classes), ins, outs)
}

/// `Op::CrossEntropyBackward`: [`plan_backward`].
pub(crate) fn cross_entropy_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    classes: usize,
) -> Result<()> {
    cx.run_plan(dt, &plan_backward(&ins[0].shape, classes), ins, outs)
}

/// `Op::CrossEntropyFused`: [`plan_fused`].
pub(crate) fn cross_entropy_fused(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    classes: usize,
) -> Result<()> {
    cx.run_plan(dt, &plan_fused(&ins[0].shape, classes), ins, outs)
}
