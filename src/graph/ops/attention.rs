//! Causal multi-head self-attention as one op. The graph holds only `qkv`, the
//! output and the per-row log-sum-exp (`lse`), never the T×T probabilities: the
//! backward pass recomputes them from `qkv` and `lse`, as flash attention does, so
//! every backend saves the same bytes between forward and backward.

use super::{same_float, stat_dtype, Meta};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// `(B, T, C)` of a `qkv [B, T, 3C]` operand, checked against `n_head`.
pub fn btc(qkv: &Shape, n_head: usize) -> Result<(usize, usize, usize)> {
    let d = qkv.dims();
    if d.len() != 3 || d[2] % 3 != 0 || n_head == 0 || (d[2] / 3) % n_head != 0 {
        return Err(Error::shape(
            "attention",
            format!("qkv must be [B, T, 3C] with C divisible by n_head={n_head}, got {qkv}"),
        ));
    }
    Ok((d[0], d[1], d[2] / 3))
}

/// The sizes a causal attention kernel takes, from `qkv [B, T, 3C]` with
/// `n_head` heads of `head_dim = C / n_head` columns each (head `h` at
/// columns `h·head_dim` of each third of a row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// Model width C (a third of qkv's last dim).
    pub c: usize,
    /// Heads H.
    pub n_head: usize,
    /// Columns per head, C / H.
    pub head_dim: usize,
}

impl AttentionDims {
    /// The sizes of `qkv [B, T, 3C]`, checked against `n_head` as [`btc`] does.
    pub fn of(qkv: &Shape, n_head: usize) -> Result<AttentionDims> {
        let (b, t, c) = btc(qkv, n_head)?;
        Ok(AttentionDims {
            b,
            t,
            c,
            n_head,
            head_dim: c / n_head,
        })
    }

    /// The logits' scale `1/√head_dim`, the square root taken in f32 (the CUDA
    /// kernels' parameter).
    pub fn scale_f32(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// The logits' scale `1/√head_dim`, taken in f64 and rounded once to f32
    /// by whoever packs it (the WGSL kernels' parameter). It may differ from
    /// [`scale_f32`](Self::scale_f32) in the last bit, so each backend keeps
    /// its own.
    pub fn scale_f64(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// Rows of `lse`: one per (batch, head, query).
    pub fn lse_rows(&self) -> usize {
        self.b * self.n_head * self.t
    }
}

/// `qkv [B, T, 3C]` → `out [B, T, C]`, `lse [B, H, T]`.
pub fn infer(ins: &[Meta], n_head: usize) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("attention", ins)?;
    let (b, t, c) = btc(ins[0].0, n_head)?;
    Ok(vec![
        (Shape(vec![b, t, c]), dt),
        (Shape(vec![b, n_head, t]), stat_dtype(dt)),
    ])
}

/// `qkv, out, lse, dout` → `dqkv [B, T, 3C]`.
pub fn infer_backward(ins: &[Meta], n_head: usize) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("attention_backward", &[ins[0], ins[1], ins[3]])?;
    let (b, t, c) = btc(ins[0].0, n_head)?;
    if ins[1].0.dims() != [b, t, c] || ins[3].0.dims() != [b, t, c] {
        return Err(Error::shape(
            "attention_backward",
            "out/dout must be [B, T, C]",
        ));
    }
    Ok(vec![(ins[0].0.clone(), dt)])
}

/// Records [`Op::AttentionBackward`] from `qkv`, the saved `out` and `lse`, and
/// `dout`; gives `dqkv`.
pub fn vjp(
    g: &mut Graph,
    ins: &[Value],
    outs: &[Value],
    dy: Value,
    n_head: usize,
) -> Result<Vec<Option<Value>>> {
    let d = g.apply(
        Op::AttentionBackward { n_head },
        &[ins[0], outs[0], outs[1], dy],
    )?;
    Ok(vec![Some(d[0])])
}
