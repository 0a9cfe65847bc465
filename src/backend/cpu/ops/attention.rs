//! Causal (grouped-query) attention on the cpu: one task per (batch, head);
//! the backward pass recomputes each probability from `q·k` and the saved
//! `lse`.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real, SharedMut};
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::graph::ops::attention::AttentionDims;
use crate::graph::ops::Op;

fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// Causal attention, one task per (batch, head) in parallel. A `qkv` row holds
/// the `H` query heads, then the `K` key heads, then the `K` value heads, each
/// of `D` columns; query head `h` reads key/value head `h / (H / K)`. Query `i`
/// scores keys `j ≤ i` by `q·k / √D`, and `out` is the softmax-weighted sum of
/// their v. `lse` gets each query row's log-sum-exp of the scaled scores.
pub fn attention_forward<F: Real>(
    qkv: &[F],     // [B, T, (H + 2K)·D]
    out: &mut [F], // [B, T, H·D]
    lse: &mut [F], // [B, H, T]
    d: &AttentionDims,
) {
    let (t, c, nh, hd) = (d.t, d.c, d.n_head, d.head_dim);
    let scale = F::one() / F::c(hd as f64).sqrt();
    let (op, lp) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    (0..d.b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / nh, bh % nh);
        let row = |i: usize| (bi * t + i) * d.row();
        let (kc, vc) = (
            d.k_start() + d.kv_head(h) * hd,
            d.v_start() + d.kv_head(h) * hd,
        );
        let mut s = vec![F::zero(); t]; // scores of one query row
        for i in 0..t {
            let q = &qkv[row(i) + h * hd..][..hd];
            let mut m = F::neg_infinity();
            for (j, sj) in s.iter_mut().enumerate().take(i + 1) {
                *sj = dot(q, &qkv[row(j) + kc..][..hd]) * scale;
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
                let v = &qkv[row(j) + vc..][..hd];
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
/// One task per (batch, key/value head): it owns that head's dk and dv, which
/// sum over the query heads of its group, and those heads' dq.
pub fn attention_backward<F: Real>(
    qkv: &[F],      // [B, T, (H + 2K)·D]
    out: &[F],      // [B, T, H·D]
    lse: &[F],      // [B, H, T]
    dout: &[F],     // [B, T, H·D]
    dqkv: &mut [F], // [B, T, (H + 2K)·D]
    d: &AttentionDims,
) {
    let (t, c, nh, nk, hd) = (d.t, d.c, d.n_head, d.n_kv_head, d.head_dim);
    let group = nh / nk;
    let scale = F::one() / F::c(hd as f64).sqrt();
    let dp = SharedMut(dqkv.as_mut_ptr());
    (0..d.b * nk).into_par_iter().for_each(|bk| {
        let (bi, kh) = (bk / nk, bk % nk);
        let row = |i: usize| (bi * t + i) * d.row();
        let (kc, vc) = (d.k_start() + kh * hd, d.v_start() + kh * hd);
        // SAFETY: (bi, kh) owns columns `col..col + hd` of batch bi's rows for
        // its key and value head and its group's query heads.
        let grad = |i: usize, col: usize| unsafe {
            std::slice::from_raw_parts_mut(dp.ptr().add(row(i) + col), hd)
        };
        let heads = kh * group..(kh + 1) * group;
        for i in 0..t {
            for col in heads.clone().map(|h| h * hd).chain([kc, vc]) {
                grad(i, col).fill(F::zero());
            }
        }
        for h in heads {
            for i in 0..t {
                let q = &qkv[row(i) + h * hd..][..hd];
                let o = &out[(bi * t + i) * c + h * hd..][..hd];
                let d_o = &dout[(bi * t + i) * c + h * hd..][..hd];
                let l = lse[(bi * nh + h) * t + i];
                let di = dot(d_o, o);
                for j in 0..=i {
                    let k = &qkv[row(j) + kc..][..hd];
                    let v = &qkv[row(j) + vc..][..hd];
                    let p = (dot(q, k) * scale - l).exp();
                    for (dv, &g) in grad(j, vc).iter_mut().zip(d_o) {
                        *dv += p * g;
                    }
                    let ds = p * (dot(d_o, v) - di) * scale;
                    for (dq, &kk) in grad(i, h * hd).iter_mut().zip(k) {
                        *dq += ds * kk;
                    }
                    for (dk, &qq) in grad(j, kc).iter_mut().zip(q) {
                        *dk += ds * qq;
                    }
                }
            }
        }
    });
}

/// Runs [`Op::Attention`] (outputs `out`, `lse`) or [`Op::AttentionBackward`]
/// (operands `qkv`, `out`, `lse`, `dout`); the sizes come from `qkv`'s shape.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    match op {
        Op::Attention { n_head, n_kv_head } => {
            let d = AttentionDims::of(&ins[0].shape, *n_head, *n_kv_head)?;
            let [out, lse] = o else {
                return Err(Error::Internal("attention outputs".into()));
            };
            attention_forward(a[0].f(n)?, out, lse, &d)
        }
        Op::AttentionBackward { n_head, n_kv_head } => {
            let d = AttentionDims::of(&ins[0].shape, *n_head, *n_kv_head)?;
            attention_backward(a[0].f(n)?, a[1].f(n)?, a[2].f(n)?, a[3].f(n)?, o[0], &d)
        }
        _ => return Err(misrouted(op)),
    }
    Ok(())
}
