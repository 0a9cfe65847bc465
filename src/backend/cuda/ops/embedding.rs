//! `Op::Embedding` and its backward (kernels/embedding.cu).

use crate::backend::cuda::launch::{family_kernels, grid, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::embedding::EmbeddingDims;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/embedding.cu.
    pub const KERNELS = "embedding" {
        FORWARD = "embedding_forward" for EVERY_DTYPE,
        BACKWARD = "embedding_backward" for EVERY_DTYPE,
    }
}

/// Row ranges the embedding backward splits a table of `vocab` rows into, one
/// thread per (column, range): at most 64, at least 2 rows each.
pub fn embedding_ranges(vocab: u64) -> u64 {
    vocab.div_ceil(2).clamp(1, 64)
}

/// The launch of `Op::Embedding`: ins ids [N] i32, table [V, C]; outs
/// out [N, C]. One thread per output element; an id outside the table gives a
/// row of NaN.
pub fn plan_forward(ids: &Shape, table: &Shape) -> OpPlan {
    let e = EmbeddingDims::of(ids, table);
    let (n, c, v) = (e.n as u64, e.c as u64, e.vocab as u64);
    let args = args![In(0), In(1), Out(0), n, c, v];
    OpPlan::one(Launch::new(FORWARD, grid((n * c) as usize, 256), args))
}

/// The launch of `Op::EmbeddingBackward { vocab }`: ins ids [N] i32,
/// dy [N, C]; outs dtable [vocab, C]. One thread per (column, row range), no
/// atomics.
pub fn plan_backward(ids: &Shape, dy: &Shape, vocab: usize) -> OpPlan {
    let e = EmbeddingDims::of_backward(ids, dy, vocab);
    let (n, c) = (e.n as u64, e.c as u64);
    let ranges = embedding_ranges(vocab as u64);
    let args = args![In(0), In(1), Out(0), n, c, vocab as u64, ranges];
    OpPlan::one(Launch::new(
        BACKWARD,
        grid((c * ranges) as usize, 256),
        args,
    ))
}

/// `Op::Embedding`: [`plan_forward`].
pub(crate) fn embedding_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_forward(&ins[0].shape, &ins[1].shape);
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::EmbeddingBackward { vocab }`: [`plan_backward`].
pub(crate) fn embedding_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    vocab: usize,
) -> Result<()> {
    let plan = plan_backward(&ins[0].shape, &ins[1].shape, vocab);
    cx.run_plan(dt, &plan, ins, outs)
}
