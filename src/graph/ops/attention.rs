//! Causal multi-head self-attention as one op. The graph holds only `qkv`, the
//! output and the per-row log-sum-exp (`lse`), never the T×T probabilities: the
//! backward pass recomputes them from `qkv` and `lse`, as flash attention does, so
//! every backend saves the same bytes between forward and backward.

use rayon::prelude::*;

use super::{same_float, stat_dtype, Meta, Real, SharedMut};
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

fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// Causal attention, one task per (batch, head) in parallel. A `qkv` row holds q,
/// k and v side by side, each split into `nh` heads of `c / nh` columns; query `i`
/// scores keys `j ≤ i` by `q·k / √(c / nh)`, and `out` is the softmax-weighted sum
/// of their v. `lse` gets each query row's log-sum-exp of the scaled scores.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<F: Real>(
    qkv: &[F],     // [B, T, 3C]
    out: &mut [F], // [B, T, C]
    lse: &mut [F], // [B, H, T]
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let hd = c / nh;
    let scale = F::one() / F::c(hd as f64).sqrt();
    let (op, lp) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / nh, bh % nh);
        let row = |i: usize| (bi * t + i) * 3 * c;
        let mut s = vec![F::zero(); t]; // scores of one query row
        for i in 0..t {
            let q = &qkv[row(i) + h * hd..][..hd];
            let mut m = F::neg_infinity();
            for (j, sj) in s.iter_mut().enumerate().take(i + 1) {
                *sj = dot(q, &qkv[row(j) + c + h * hd..][..hd]) * scale;
                m = m.max(*sj);
            }
            let mut sum = F::zero();
            for sj in s.iter_mut().take(i + 1) {
                *sj = (*sj - m).exp();
                sum += *sj;
            }
            // SAFETY: (bi, h) owns columns h*hd..(h+1)*hd of `out` rows of batch bi
            // and lse[bi, h, :]; no other task touches them.
            let o = unsafe {
                std::slice::from_raw_parts_mut(op.ptr().add((bi * t + i) * c + h * hd), hd)
            };
            o.fill(F::zero());
            for (j, &p) in s.iter().enumerate().take(i + 1) {
                let v = &qkv[row(j) + 2 * c + h * hd..][..hd];
                let p = p / sum;
                for (o, &v) in o.iter_mut().zip(v) {
                    *o += p * v;
                }
            }
            unsafe { *lp.ptr().add((bi * nh + h) * t + i) = m + sum.ln() };
        }
    });
}

/// Gradients of [`attention_forward`] into `dqkv` (overwritten), recomputing each
/// probability from `q·k` and the saved `lse`, so no T×T matrix is ever stored.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<F: Real>(
    qkv: &[F],      // [B, T, 3C]
    out: &[F],      // [B, T, C]
    lse: &[F],      // [B, H, T]
    dout: &[F],     // [B, T, C]
    dqkv: &mut [F], // [B, T, 3C]
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let hd = c / nh;
    let scale = F::one() / F::c(hd as f64).sqrt();
    let dp = SharedMut(dqkv.as_mut_ptr());
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / nh, bh % nh);
        let row = |i: usize| (bi * t + i) * 3 * c;
        // SAFETY: (bi, h) owns its head's columns of dq, dk and dv in batch bi.
        let grad = |i: usize, part: usize| unsafe {
            std::slice::from_raw_parts_mut(dp.ptr().add(row(i) + part * c + h * hd), hd)
        };
        for i in 0..t {
            for part in 0..3 {
                grad(i, part).fill(F::zero());
            }
        }
        for i in 0..t {
            let q = &qkv[row(i) + h * hd..][..hd];
            let o = &out[(bi * t + i) * c + h * hd..][..hd];
            let d_o = &dout[(bi * t + i) * c + h * hd..][..hd];
            let l = lse[(bi * nh + h) * t + i];
            let di = dot(d_o, o);
            for j in 0..=i {
                let k = &qkv[row(j) + c + h * hd..][..hd];
                let v = &qkv[row(j) + 2 * c + h * hd..][..hd];
                let p = (dot(q, k) * scale - l).exp();
                for (dv, &g) in grad(j, 2).iter_mut().zip(d_o) {
                    *dv += p * g;
                }
                let ds = p * (dot(d_o, v) - di) * scale;
                for (dq, &kk) in grad(i, 0).iter_mut().zip(k) {
                    *dq += ds * kk;
                }
                for (dk, &qq) in grad(j, 1).iter_mut().zip(q) {
                    *dk += ds * qq;
                }
            }
        }
    });
}
