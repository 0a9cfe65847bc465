//! Embedding lookup: rows of a table gathered by token id.

use super::{same_float, Meta};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// Shape rule of [`Op::Embedding`]: `ids [..] i32`, `table [V, C]` → `[.., C]` in
/// the table's dtype.
pub fn infer(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let (ids, idt) = ins[0];
    let (table, tdt) = ins[1];
    if idt != DType::I32 {
        return Err(Error::dtype("embedding", "i32 ids", idt));
    }
    same_float("embedding", &ins[1..])?;
    if table.rank() != 2 {
        return Err(Error::shape(
            "embedding",
            format!("table must be [V, C], got {table}"),
        ));
    }
    let mut out = ids.dims().to_vec();
    out.push(table.dims()[1]);
    Ok(vec![(Shape(out), tdt)])
}

/// `ids [..] i32`, `dy [.., C]` → `dtable [vocab, C]`.
pub fn infer_backward(ins: &[Meta], vocab: usize) -> Result<Vec<(Shape, DType)>> {
    let (ids, idt) = ins[0];
    let (dy, dt) = ins[1];
    if idt != DType::I32 {
        return Err(Error::dtype("embedding_backward", "i32 ids", idt));
    }
    if dy.rank() != ids.rank() + 1 || &dy.dims()[..ids.rank()] != ids.dims() {
        return Err(Error::shape(
            "embedding_backward",
            format!("dy {dy} does not match ids {ids}"),
        ));
    }
    Ok(vec![(Shape(vec![vocab, dy.last()]), dt)])
}

/// The sizes an embedding kernel takes: `n` token ids, rows of `c` columns,
/// a table of `vocab` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddingDims {
    /// Token ids N (every dim of `ids`).
    pub n: usize,
    /// Columns C of a table row.
    pub c: usize,
    /// Table rows V.
    pub vocab: usize,
}

impl EmbeddingDims {
    /// Of the forward: `ids [..] i32`, `table [V, C]`.
    pub fn of(ids: &Shape, table: &Shape) -> EmbeddingDims {
        EmbeddingDims {
            n: ids.numel(),
            c: table.last(),
            vocab: table.dims()[0],
        }
    }

    /// Of the backward: `ids [..] i32`, `dy [.., C]`, `dtable [vocab, C]`.
    pub fn of_backward(ids: &Shape, dy: &Shape, vocab: usize) -> EmbeddingDims {
        EmbeddingDims {
            n: ids.numel(),
            c: dy.last(),
            vocab,
        }
    }
}

/// Records [`Op::EmbeddingBackward`] for the table's gradient; the ids get none.
pub fn vjp(g: &mut Graph, ins: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let vocab = g.shape(ins[1]).dims()[0];
    let dtable = g.apply(Op::EmbeddingBackward { vocab }, &[ins[0], dy])?[0];
    Ok(vec![None, Some(dtable)])
}
