//! Embedding lookup and its gradient, a scatter-add into the table.

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{groups_1d, u, Bind};
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::embedding::EmbeddingDims;

const EMBEDDING: Shader = Shader {
    file: "embedding",
    source: include_str!("../../../../shaders/embedding.wgsl"),
    entries: &["forward", "backward"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[EMBEDDING];

const FORWARD: Kernel = EMBEDDING.kernel("forward");
const BACKWARD: Kernel = EMBEDDING.kernel("backward");

/// `ids [N] i32`, `table [V, C]` → `out [N, C]`: one thread per output element.
pub(crate) fn embedding_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (ids, table, out) = (ins[0], ins[1], outs[0]);
    let EmbeddingDims { n, c, vocab } = EmbeddingDims::of(&ids.shape, &table.shape);
    gpu.dispatch(
        FORWARD,
        &[u(n), u(c), u(vocab)],
        &[(1, Bind::T(ids)), (2, Bind::T(table)), (3, Bind::T(out))],
        groups_1d(n * c),
    )
}

/// `ids [N] i32`, `dout [N, C]` → `dtable [vocab, C]`: one thread per column,
/// tokens added in order so that the sum does not vary between runs.
pub(crate) fn embedding_backward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    vocab: usize,
) -> Result<()> {
    let (ids, dout, dtable) = (ins[0], ins[1], outs[0]);
    let EmbeddingDims { n, c, vocab } = EmbeddingDims::of_backward(&ids.shape, &dout.shape, vocab);
    gpu.dispatch(
        BACKWARD,
        &[u(n), u(c), u(vocab)],
        &[(1, Bind::T(ids)), (2, Bind::T(dout)), (3, Bind::T(dtable))],
        groups_1d(c),
    )
}
