//! `Op::Softmax` and its backward (kernels/softmax.cu): one block of 256
//! threads per row of V.

use crate::backend::cuda::launch::{family_kernels, rows, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/softmax.cu.
    pub const KERNELS = "softmax" {
        FORWARD = "softmax_forward" for EVERY_DTYPE,
        BACKWARD = "softmax_backward" for EVERY_DTYPE,
    }
}

/// The launch of `Op::Softmax` on `x [R, V]`: ins x [R, V]; outs y [R, V].
pub fn plan_forward(x: &Shape) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(x);
    let args = args![In(0), Out(0), cols as u64];
    OpPlan::one(Launch::new(FORWARD, rows(r), args))
}

/// The launch of `Op::SoftmaxBackward` on `y [R, V]`: ins y [R, V],
/// dy [R, V]; outs dx [R, V].
pub fn plan_backward(y: &Shape) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(y);
    let args = args![In(0), In(1), Out(0), cols as u64];
    OpPlan::one(Launch::new(BACKWARD, rows(r), args))
}

/// `Op::Softmax`: [`plan_forward`].
pub(crate) fn softmax_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_forward(&ins[0].shape), ins, outs)
}

/// `Op::SoftmaxBackward`: [`plan_backward`].
pub(crate) fn softmax_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_backward(&ins[0].shape), ins, outs)
}
