//! Causal multi-head self-attention as one op. The graph holds only `qkv`, the
//! output and the per-row log-sum-exp (`lse`), never the T×T probabilities: the
//! backward pass recomputes them from `qkv` and `lse`, as flash attention does, so
//! every backend saves the same bytes between forward and backward.

use super::{same_float, stat_dtype, Meta};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// `(B, T, C)` of a multi-head `qkv [B, T, 3C]` operand, checked against
/// `n_head`.
pub fn btc(qkv: &Shape, n_head: usize) -> Result<(usize, usize, usize)> {
    let d = AttentionDims::of(qkv, n_head, n_head)?;
    Ok((d.b, d.t, d.c))
}

/// `(B, T, H·D)` of a `qkv [B, T, (H + 2K)·D]` operand whose key/value heads
/// are unknown (the cost model's): the widest split `K ≤ H` that divides,
/// which is `K = H` for multi-head attention. FLOPs follow the queries.
pub fn query_btc(qkv: &Shape, n_head: usize) -> Result<(usize, usize, usize)> {
    let d = qkv.dims();
    if d.len() != 3 || n_head == 0 {
        return Err(Error::shape(
            "attention",
            format!("qkv must be [B, T, W], got {qkv}"),
        ));
    }
    for k in (1..=n_head).rev().filter(|k| n_head % k == 0) {
        if d[2] % (n_head + 2 * k) == 0 {
            let hd = d[2] / (n_head + 2 * k);
            return Ok((d[0], d[1], hd * n_head));
        }
    }
    Err(Error::shape(
        "attention",
        format!("qkv {qkv} does not split into {n_head} heads"),
    ))
}

/// The sizes a causal attention kernel takes, from `qkv [B, T, (H + 2K)·D]`:
/// `H` query heads of `head_dim = D` columns at the start of a row, then `K`
/// key heads, then `K` value heads (`K = H`: each a third of the row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// Query width C = H·D (the output's last dim).
    pub c: usize,
    /// Query heads H.
    pub n_head: usize,
    /// Key/value heads K, dividing H.
    pub n_kv_head: usize,
    /// Columns per head, C / H.
    pub head_dim: usize,
}

impl AttentionDims {
    /// The sizes of `qkv [B, T, (H + 2K)·D]` for `n_head` query and
    /// `n_kv_head` key/value heads; [`Error::Shape`] unless K divides H and
    /// the row splits into them.
    pub fn of(qkv: &Shape, n_head: usize, n_kv_head: usize) -> Result<AttentionDims> {
        let d = qkv.dims();
        let heads = n_head + 2 * n_kv_head;
        let ok = d.len() == 3
            && n_head > 0
            && n_kv_head > 0
            && n_head % n_kv_head == 0
            && d[2] % heads == 0;
        if !ok {
            return Err(Error::shape(
                "attention",
                format!(
                    "qkv must be [B, T, (H + 2K)·D] with H={n_head} query heads and K={n_kv_head} key/value heads dividing H, got {qkv}"
                ),
            ));
        }
        let head_dim = d[2] / heads;
        Ok(AttentionDims {
            b: d[0],
            t: d[1],
            c: n_head * head_dim,
            n_head,
            n_kv_head,
            head_dim,
        })
    }

    /// Width of a `qkv` row: `(H + 2K)·D`.
    pub fn row(&self) -> usize {
        (self.n_head + 2 * self.n_kv_head) * self.head_dim
    }

    /// Column where the keys start (`H·D`); the values start at
    /// `k_start() + K·D`.
    pub fn k_start(&self) -> usize {
        self.c
    }

    /// Column where the values start.
    pub fn v_start(&self) -> usize {
        self.c + self.n_kv_head * self.head_dim
    }

    /// The key/value head query head `h` reads.
    pub fn kv_head(&self, h: usize) -> usize {
        h / (self.n_head / self.n_kv_head)
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

/// `qkv [B, T, (H + 2K)·D]` → `out [B, T, H·D]`, `lse [B, H, T]`.
pub fn infer(ins: &[Meta], n_head: usize, n_kv_head: usize) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("attention", ins)?;
    let d = AttentionDims::of(ins[0].0, n_head, n_kv_head)?;
    Ok(vec![
        (Shape(vec![d.b, d.t, d.c]), dt),
        (Shape(vec![d.b, n_head, d.t]), stat_dtype(dt)),
    ])
}

/// `qkv, out, lse, dout` → `dqkv` (qkv's shape).
pub fn infer_backward(
    ins: &[Meta],
    n_head: usize,
    n_kv_head: usize,
) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("attention_backward", &[ins[0], ins[1], ins[3]])?;
    let d = AttentionDims::of(ins[0].0, n_head, n_kv_head)?;
    if ins[1].0.dims() != [d.b, d.t, d.c] || ins[3].0.dims() != [d.b, d.t, d.c] {
        return Err(Error::shape(
            "attention_backward",
            "out/dout must be [B, T, H·D]",
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
    n_kv_head: usize,
) -> Result<Vec<Option<Value>>> {
    let d = g.apply(
        Op::AttentionBackward { n_head, n_kv_head },
        &[ins[0], outs[0], outs[1], dy],
    )?;
    Ok(vec![Some(d[0])])
}
