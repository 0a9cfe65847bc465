//! Embedding gather and its scatter-add on the cpu, in token order.

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::graph::ops::Op;

fn check_id(id: i32, vocab: usize) -> Result<usize> {
    if id < 0 || id as usize >= vocab {
        return Err(Error::Kernel {
            op: "embedding",
            detail: format!(
                "token id {id} is outside the vocabulary of {vocab}; check the tokenizer and the model's vocabulary size"
            ),
        });
    }
    Ok(id as usize)
}

/// `out[i, :] = table[ids[i], :]`.
pub fn embedding_forward<F: Real>(
    ids: &[i32],   // [N]
    table: &[F],   // [V, C]
    out: &mut [F], // [N, C]
    c: usize,
) -> Result<()> {
    let vocab = table.len() / c;
    for (row, &id) in out.chunks_exact_mut(c).zip(ids) {
        let id = check_id(id, vocab)?;
        row.copy_from_slice(&table[id * c..(id + 1) * c]);
    }
    Ok(())
}

/// `dtable[ids[i], :] += dy[i, :]`, in token order so the sum is deterministic.
pub fn embedding_backward<F: Real>(
    ids: &[i32],      // [N]
    dy: &[F],         // [N, C]
    dtable: &mut [F], // [V, C]
    c: usize,
) -> Result<()> {
    let vocab = dtable.len() / c;
    dtable.fill(F::zero());
    for (row, &id) in dy.chunks_exact(c).zip(ids) {
        let id = check_id(id, vocab)?;
        for (d, &x) in dtable[id * c..(id + 1) * c].iter_mut().zip(row) {
            *d += x;
        }
    }
    Ok(())
}

/// Runs [`Op::Embedding`] or [`Op::EmbeddingBackward`]: `a` holds the ids and
/// the table (or `dy`), `ins` their shapes.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    let c = ins[1].shape.last();
    match op {
        Op::Embedding => embedding_forward(a[0].ids(n)?, a[1].f(n)?, o[0], c),
        Op::EmbeddingBackward { .. } => embedding_backward(a[0].ids(n)?, a[1].f(n)?, o[0], c),
        _ => Err(misrouted(op)),
    }
}
