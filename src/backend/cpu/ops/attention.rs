//! Causal attention on the cpu: one task per (batch, head); the backward pass
//! recomputes each probability from `q·k` and the saved `lse`.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real, SharedMut};
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::graph::ops::attention::btc;
use crate::graph::ops::Op;

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

/// Runs [`Op::Attention`] (outputs `out`, `lse`) or [`Op::AttentionBackward`]
/// (operands `qkv`, `out`, `lse`, `dout`); `(B, T, C)` come from `qkv`'s shape.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    match op {
        Op::Attention { n_head } => {
            let (b, t, c) = btc(&ins[0].shape, *n_head)?;
            let [out, lse] = o else {
                return Err(Error::Internal("attention outputs".into()));
            };
            attention_forward(a[0].f(n)?, out, lse, b, t, c, *n_head)
        }
        Op::AttentionBackward { n_head } => {
            let (b, t, c) = btc(&ins[0].shape, *n_head)?;
            attention_backward(
                a[0].f(n)?,
                a[1].f(n)?,
                a[2].f(n)?,
                a[3].f(n)?,
                o[0],
                b,
                t,
                c,
                *n_head,
            )
        }
        _ => return Err(misrouted(op)),
    }
    Ok(())
}
