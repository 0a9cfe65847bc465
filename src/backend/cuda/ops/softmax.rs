//! `Op::Softmax` and its backward (kernels/softmax.cu): one block of 256
//! threads per row of V.

use crate::backend::cuda::launch::{family_kernels, launch, ptr, rows, EVERY_DTYPE};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;
use crate::tensor::DType;

family_kernels! {
    /// kernels/softmax.cu.
    pub const KERNELS = "softmax" {
        FORWARD = "softmax_forward" for EVERY_DTYPE,
        BACKWARD = "softmax_backward" for EVERY_DTYPE,
    }
}

/// `Op::Softmax`: ins x [R, V]; outs y [R, V].
pub(crate) fn softmax_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (x, y) = (ins[0], outs[0]);
    let RowDims { rows: r, cols } = RowDims::of(&x.shape);
    let v = cols as u64;
    launch!(cx, FORWARD, dt, rows(r), ptr(x), ptr(y), v)
}

/// `Op::SoftmaxBackward`: ins y [R, V], dy [R, V]; outs dx [R, V].
pub(crate) fn softmax_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (y, dy, dx) = (ins[0], ins[1], outs[0]);
    let RowDims { rows: r, cols } = RowDims::of(&y.shape);
    let v = cols as u64;
    launch!(cx, BACKWARD, dt, rows(r), ptr(y), ptr(dy), ptr(dx), v)
}
