//! Causal (grouped-query) attention on the cpu: one task per (batch, head);
//! the backward pass recomputes each probability from `q·k` and the saved
//! `lse`.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real, SharedMut};
use crate::backend::cpu::simd::wide;
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::graph::ops::attention::AttentionDims;
use crate::graph::ops::Op;

/// Query rows per block: a block's scores and probabilities ([QB, T]) are
/// products of whole matrices, so that the GEMM kernel, not a loop per
/// query, does the multiply-adds, and T×T is never held for long sequences.
const QB: usize = 64;

#[inline(always)]
fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// `c = a @ b`, or `c += a @ b` if `acc`: one single-threaded GEMM (each task
/// is one head; rayon already has the cores busy).
///
/// # Safety
/// As [`Real::gemm`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn gemm<F: Real>(
    (m, k, n): (usize, usize, usize),
    (a, rsa, csa): (*const F, usize, usize),
    (b, rsb, csb): (*const F, usize, usize),
    (c, rsc): (*mut F, usize),
    acc: bool,
) {
    let i = |x: usize| x as isize;
    F::gemm(
        m,
        k,
        n,
        a,
        i(rsa),
        i(csa),
        b,
        i(rsb),
        i(csb),
        c,
        i(rsc),
        1,
        acc,
    )
}

/// One query row's scores `s` (keys `0..=i`, then the masked rest) turned into
/// probabilities in place: scaled, softmaxed, the masked keys 0. Returns the
/// log-sum-exp of the scaled scores.
#[inline(always)]
fn softmax_causal<F: Real>(s: &mut [F], i: usize, scale: F) -> F {
    let (s, masked) = s.split_at_mut(i + 1);
    masked.fill(F::zero());
    s.iter_mut().for_each(|x| *x = *x * scale);
    // max is exact, so lanes may take it in any order.
    let m = s.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
    s.iter_mut().for_each(|x| *x = (*x - m).vexp());
    let sum = s.iter().copied().fold(F::zero(), |a, x| a + x);
    s.iter_mut().for_each(|x| *x = *x / sum);
    m + sum.ln()
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
    let (t, c, nh, hd, rs) = (d.t, d.c, d.n_head, d.head_dim, d.row());
    let scale = F::one() / F::c(hd as f64).sqrt();
    let (op, lp) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    (0..d.b * nh).into_par_iter().for_each(|bh| {
        wide(
            #[inline(always)]
            || {
                let (bi, h) = (bh / nh, bh % nh);
                let x = &qkv[bi * t * rs..][..t * rs]; // [T, (H + 2K)·D] of batch bi
                let q = x[h * hd..].as_ptr();
                let k = x[d.k_start() + d.kv_head(h) * hd..].as_ptr();
                let v = x[d.v_start() + d.kv_head(h) * hd..].as_ptr();
                // Every element a block reads is written first (GEMM, then the mask).
                let mut s = F::take(QB.min(t) * t); // [QB, keys]
                for i0 in (0..t).step_by(QB) {
                    // Queries i0..i1 see keys 0..i1.
                    let (i1, nq) = ((i0 + QB).min(t), QB.min(t - i0));
                    let nk = i1;
                    // SAFETY: the operands are the head's columns of rows
                    // 0..i1 of this batch entry; (bi, h) alone writes columns
                    // h*hd..(h+1)*hd of `out` rows of batch bi, and
                    // lse[bi, h, :].
                    unsafe {
                        // s[nq, nk] = q[i0..i1] @ k[0..nk]ᵀ
                        let q = q.add(i0 * rs);
                        gemm(
                            (nq, hd, nk),
                            (q, rs, 1),
                            (k, 1, rs),
                            (s.as_mut_ptr(), nk),
                            false,
                        );
                        for (r, row) in s.chunks_mut(nk).take(nq).enumerate() {
                            let l = softmax_causal(row, i0 + r, scale);
                            *lp.ptr().add((bi * nh + h) * t + i0 + r) = l;
                        }
                        // out[i0..i1] = p[nq, nk] @ v[0..nk]
                        let o = op.ptr().add((bi * t + i0) * c + h * hd);
                        gemm((nq, nk, hd), (s.as_ptr(), nk, 1), (v, rs, 1), (o, c), false);
                    }
                }
                F::give(s);
            },
        )
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
    let (t, c, nh, nk_heads, hd, rs) = (d.t, d.c, d.n_head, d.n_kv_head, d.head_dim, d.row());
    let group = nh / nk_heads;
    let scale = F::one() / F::c(hd as f64).sqrt();
    let dp = SharedMut(dqkv.as_mut_ptr());
    (0..d.b * nk_heads).into_par_iter().for_each(|bk| {
        wide(
            #[inline(always)]
            || {
                let (bi, kh) = (bk / nk_heads, bk % nk_heads);
                let x = &qkv[bi * t * rs..][..t * rs]; // [T, (H + 2K)·D] of batch bi
                let (kc, vc) = (d.k_start() + kh * hd, d.v_start() + kh * hd);
                let (k, v) = (x[kc..].as_ptr(), x[vc..].as_ptr());
                // SAFETY: (bi, kh) owns columns `col..col + hd` of batch bi's
                // rows for its key and value head and its group's query heads.
                let g = |col: usize| unsafe { dp.ptr().add(bi * t * rs + col) };
                for i in 0..t {
                    for col in [kc, vc] {
                        // SAFETY: as for `g`.
                        unsafe { std::slice::from_raw_parts_mut(g(i * rs + col), hd) }
                            .fill(F::zero());
                    }
                }
                let blk = QB.min(t) * t;
                let (mut p, mut ds) = (F::take(blk), F::take(blk)); // [QB, keys], as `s` above
                for h in kh * group..(kh + 1) * group {
                    let q = x[h * hd..].as_ptr();
                    let d_o = dout[bi * t * c + h * hd..].as_ptr();
                    for i0 in (0..t).step_by(QB) {
                        let (i1, nq) = ((i0 + QB).min(t), QB.min(t - i0));
                        let nk = i1;
                        // SAFETY: operands are rows 0..i1 of this batch entry's
                        // columns of the task's heads; see `g` for the writes.
                        unsafe {
                            let (qb, dob) = (q.add(i0 * rs), d_o.add(i0 * c));
                            // p = q kᵀ, ds = dout vᵀ (both [nq, nk])
                            gemm(
                                (nq, hd, nk),
                                (qb, rs, 1),
                                (k, 1, rs),
                                (p.as_mut_ptr(), nk),
                                false,
                            );
                            gemm(
                                (nq, hd, nk),
                                (dob, c, 1),
                                (v, 1, rs),
                                (ds.as_mut_ptr(), nk),
                                false,
                            );
                            for r in 0..nq {
                                let i = i0 + r;
                                let row = (bi * t + i) * c + h * hd;
                                let di = dot(&dout[row..][..hd], &out[row..][..hd]);
                                let l = lse[(bi * nh + h) * t + i];
                                let (p, ds) = (&mut p[r * nk..][..nk], &mut ds[r * nk..][..nk]);
                                for (pj, dsj) in p.iter_mut().zip(ds.iter_mut()).take(i + 1) {
                                    *pj = (*pj * scale - l).vexp();
                                    *dsj = *pj * (*dsj - di) * scale;
                                }
                                p[i + 1..].fill(F::zero());
                                ds[i + 1..].fill(F::zero());
                            }
                            // dq[i0..i1] = ds @ k[0..nk]
                            let dq = g(i0 * rs + h * hd);
                            gemm(
                                (nq, nk, hd),
                                (ds.as_ptr(), nk, 1),
                                (k, rs, 1),
                                (dq, rs),
                                false,
                            );
                            // dv[0..nk] += pᵀ @ dout[i0..i1], dk[0..nk] += dsᵀ @ q[i0..i1]:
                            // zeroed above, they gather every block of every head.
                            gemm(
                                (nk, nq, hd),
                                (p.as_ptr(), 1, nk),
                                (dob, c, 1),
                                (g(vc), rs),
                                true,
                            );
                            gemm(
                                (nk, nq, hd),
                                (ds.as_ptr(), 1, nk),
                                (qb, rs, 1),
                                (g(kc), rs),
                                true,
                            );
                        }
                    }
                }
                F::give(p);
                F::give(ds);
            },
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tensor::Shape;

    /// Attention by its definition, one query and key at a time, in f64:
    /// `(out, lse, dqkv)` for `qkv` and the upstream gradient `dout`.
    fn naive(qkv: &[f64], dout: &[f64], d: &AttentionDims) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (t, c, hd, rs) = (d.t, d.c, d.head_dim, d.row());
        let scale = 1.0 / (hd as f64).sqrt();
        let (mut out, mut lse) = (vec![0.0; d.b * t * c], vec![0.0; d.b * d.n_head * t]);
        let mut dqkv = vec![0.0; qkv.len()];
        let at = |b: usize, i: usize, col: usize| b * t * rs + i * rs + col;
        for b in 0..d.b {
            for h in 0..d.n_head {
                let (qc, kc) = (h * hd, d.k_start() + d.kv_head(h) * hd);
                let vc = d.v_start() + d.kv_head(h) * hd;
                for i in 0..t {
                    let s: Vec<f64> = (0..=i)
                        .map(|j| {
                            (0..hd)
                                .map(|e| qkv[at(b, i, qc + e)] * qkv[at(b, j, kc + e)])
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
                    lse[(b * d.n_head + h) * t + i] = m + z.ln();
                    let o = (b * t + i) * c + h * hd;
                    for e in 0..hd {
                        out[o + e] = (0..=i).map(|j| p[j] * qkv[at(b, j, vc + e)]).sum();
                    }
                    // dp_j = dout·v_j, ds_j = p_j (dp_j − dout·out) · scale
                    let di: f64 = (0..hd).map(|e| dout[o + e] * out[o + e]).sum();
                    for j in 0..=i {
                        let dpj: f64 = (0..hd).map(|e| dout[o + e] * qkv[at(b, j, vc + e)]).sum();
                        let dsj = p[j] * (dpj - di) * scale;
                        for e in 0..hd {
                            dqkv[at(b, j, vc + e)] += p[j] * dout[o + e];
                            dqkv[at(b, i, qc + e)] += dsj * qkv[at(b, j, kc + e)];
                            dqkv[at(b, j, kc + e)] += dsj * qkv[at(b, i, qc + e)];
                        }
                    }
                }
            }
        }
        (out, lse, dqkv)
    }

    /// More than two query blocks (the last one short) and grouped heads: the
    /// blocked GEMM kernels agree with the definition.
    #[test]
    fn blocked_kernels_match_the_definition() {
        let (b, t, nh, nk, hd) = (2, 2 * QB + 7, 4, 2, 8);
        let d = AttentionDims::of(&Shape(vec![b, t, (nh + 2 * nk) * hd]), nh, nk).unwrap();
        let mut rng = Rng::new(7);
        let qkv: Vec<f64> = (0..b * t * d.row()).map(|_| rng.normal()).collect();
        let dout: Vec<f64> = (0..b * t * d.c).map(|_| rng.normal()).collect();
        let (want_out, want_lse, want_dqkv) = naive(&qkv, &dout, &d);
        let (mut out, mut lse) = (
            vec![f64::NAN; want_out.len()],
            vec![f64::NAN; want_lse.len()],
        );
        attention_forward(&qkv, &mut out, &mut lse, &d);
        let mut dqkv = vec![f64::NAN; qkv.len()];
        attention_backward(&qkv, &out, &lse, &dout, &mut dqkv, &d);
        for (name, got, want) in [
            ("out", &out, &want_out),
            ("lse", &lse, &want_lse),
            ("dqkv", &dqkv, &want_dqkv),
        ] {
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                    "{name}[{i}]: {g} vs {w}"
                );
            }
        }
    }
}
