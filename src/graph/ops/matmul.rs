//! Matrix multiply `op(a) @ op(b)` with optional transposes, batched over leading
//! dims. A 2-D operand is shared by every batch entry (a weight matrix).

use super::{same_float, Meta};
use crate::error::{Error, Result};
use crate::graph::{Graph, Value};
use crate::tensor::{DType, Shape};

/// The GEMM view of one matmul: batch count, sizes, and whether each operand is
/// shared across the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Number of GEMMs: the product of the batch dims (1 when both operands are 2-D).
    pub batch: usize,
    /// Rows of `op(a)` and of the output.
    pub m: usize,
    /// The contracted size: columns of `op(a)`, rows of `op(b)`.
    pub k: usize,
    /// Columns of `op(b)` and of the output.
    pub n: usize,
    /// `a` is 2-D, so every batch entry reuses it.
    pub a_shared: bool,
    /// `b` is 2-D, so every batch entry reuses it (a weight matrix).
    pub b_shared: bool,
}

fn split_mat(s: &Shape) -> (&[usize], usize, usize) {
    let d = s.dims();
    let r = d.len();
    (&d[..r - 2], d[r - 2], d[r - 1])
}

/// Resolves batch dims and GEMM sizes, or says why the operands don't fit.
pub fn dims(a: &Shape, b: &Shape, ta: bool, tb: bool) -> Result<(Dims, Vec<usize>)> {
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::shape(
            "matmul",
            format!("operands need rank ≥ 2, got {a} and {b}"),
        ));
    }
    let (ba, a0, a1) = split_mat(a);
    let (bb, b0, b1) = split_mat(b);
    let (m, ka) = if ta { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if tb { (b1, b0) } else { (b0, b1) };
    if ka != kb {
        return Err(Error::shape(
            "matmul",
            format!(
                "inner dims differ: {a}{} @ {b}{} (k {ka} vs {kb})",
                t(ta),
                t(tb)
            ),
        ));
    }
    let batch_dims = match (ba.is_empty(), bb.is_empty()) {
        (_, true) => ba.to_vec(),
        (true, false) => bb.to_vec(),
        (false, false) if ba == bb => ba.to_vec(),
        _ => {
            return Err(Error::shape(
                "matmul",
                format!("batch dims differ: {a} vs {b}"),
            ))
        }
    };
    let batch = batch_dims.iter().product();
    let d = Dims {
        batch,
        m,
        k: ka,
        n,
        a_shared: ba.is_empty(),
        b_shared: bb.is_empty(),
    };
    Ok((d, batch_dims))
}

fn t(x: bool) -> &'static str {
    if x {
        "ᵀ"
    } else {
        ""
    }
}

/// Shape rule of [`Op::MatMul`](crate::graph::Op::MatMul): `[.., M, K] @ [.., K, N]`
/// → `[.., M, N]` after the transposes, the batch dims taken from whichever
/// operand has them (both must agree when both do).
pub fn infer(ins: &[Meta], ta: bool, tb: bool) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("matmul", ins)?;
    let (d, mut out) = dims(ins[0].0, ins[1].0, ta, tb)?;
    out.push(d.m);
    out.push(d.n);
    Ok(vec![(Shape(out), dt)])
}

/// Gradients of `c = op(a) @ op(b)`:
/// - `a b`:   da = dc bᵀ,    db = aᵀ dc
/// - `aᵀ b`:  da = b dcᵀ,    db = a dc
/// - `a bᵀ`:  da = dc b,     db = dcᵀ a
/// - `aᵀ bᵀ`: da = bᵀ dcᵀ,   db = dcᵀ aᵀ
///
/// An operand shared by the batch gets the sum over the batch; for the common
/// weight case (batched `a`, shared `b`, no `ta`) that is one GEMM over the
/// flattened batch instead of a batched product followed by a sum.
pub fn vjp(
    g: &mut Graph,
    ins: &[Value],
    dc: Value,
    ta: bool,
    tb: bool,
) -> Result<Vec<Option<Value>>> {
    let (a, b) = (ins[0], ins[1]);
    let (d, batch_dims) = dims(g.shape(a), g.shape(b), ta, tb)?;
    let nb = batch_dims.len();

    let da = match (ta, tb) {
        (false, false) => g.matmul_t(dc, b, false, true)?,
        (true, false) => g.matmul_t(b, dc, false, true)?,
        (false, true) => g.matmul_t(dc, b, false, false)?,
        (true, true) => g.matmul_t(b, dc, true, true)?,
    };
    let da = reduce_shared(g, da, d.a_shared && nb > 0, nb)?;

    let db = if d.b_shared && nb > 0 && !ta {
        let a2 = g.reshape(a, [d.batch * d.m, d.k])?;
        let dc2 = g.reshape(dc, [d.batch * d.m, d.n])?;
        if tb {
            g.matmul_t(dc2, a2, true, false)?
        } else {
            g.matmul_t(a2, dc2, true, false)?
        }
    } else {
        let db = match (ta, tb) {
            (false, false) => g.matmul_t(a, dc, true, false)?,
            (true, false) => g.matmul_t(a, dc, false, false)?,
            (false, true) => g.matmul_t(dc, a, true, false)?,
            (true, true) => g.matmul_t(dc, a, true, true)?,
        };
        reduce_shared(g, db, d.b_shared && nb > 0, nb)?
    };
    Ok(vec![Some(da), Some(db)])
}

fn reduce_shared(g: &mut Graph, x: Value, shared: bool, nb: usize) -> Result<Value> {
    if shared {
        let axes: Vec<usize> = (0..nb).collect();
        g.sum(x, &axes)
    } else {
        Ok(x)
    }
}
