//! `Op::Embedding` and its backward (kernels/embedding.cu).

use crate::backend::cuda::launch::{family_kernels, grid, launch, ptr, EVERY_DTYPE};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::embedding::EmbeddingDims;
use crate::tensor::DType;

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

/// `Op::Embedding`: ins ids [N] i32, table [V, C]; outs out [N, C]. One thread
/// per output element; an id outside the table gives a row of NaN.
pub(crate) fn embedding_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (ids, table, out) = (ins[0], ins[1], outs[0]);
    let e = EmbeddingDims::of(&ids.shape, &table.shape);
    let (n, c, v) = (e.n as u64, e.c as u64, e.vocab as u64);
    let cfg = grid((n * c) as usize, 256);
    launch!(
        cx,
        FORWARD,
        dt,
        cfg,
        ptr(ids),
        ptr(table),
        ptr(out),
        n,
        c,
        v
    )
}

/// `Op::EmbeddingBackward { vocab }`: ins ids [N] i32, dy [N, C]; outs
/// dtable [vocab, C]. One thread per (column, row range), no atomics.
pub(crate) fn embedding_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    vocab: usize,
) -> Result<()> {
    let (ids, dy, dtable) = (ins[0], ins[1], outs[0]);
    let e = EmbeddingDims::of_backward(&ids.shape, &dy.shape, vocab);
    let (n, c) = (e.n as u64, e.c as u64);
    let ranges = embedding_ranges(vocab as u64);
    let cfg = grid((c * ranges) as usize, 256);
    let (ids, dy, dtable) = (ptr(ids), ptr(dy), ptr(dtable));
    launch!(
        cx,
        BACKWARD,
        dt,
        cfg,
        ids,
        dy,
        dtable,
        n,
        c,
        vocab as u64,
        ranges
    )
}
