//! `Op::MatMul`: no kernel of its own, a cuBLAS GEMM (see blas.rs).

use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;

/// `Op::MatMul { ta, tb }`: ins a [.., M, K], b [.., K, N] (before the
/// transposes; a 2-D operand is shared by the batch); outs c [.., M, N].
pub(crate) fn matmul_forward(
    cx: &mut CudaBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    ta: bool,
    tb: bool,
) -> Result<()> {
    let (a, b, c) = (ins[0], ins[1], outs[0]);
    cx.gemm(a, b, c, ta, tb)
}
