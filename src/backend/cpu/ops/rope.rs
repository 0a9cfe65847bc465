//! Rotary position embeddings on the cpu: one task per (batch, position)
//! row of `qkv`; angles in f64, rounded once to the kernel's float type.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::attention::AttentionDims;
use crate::graph::ops::rope::inv_freq;
use crate::graph::ops::Op;

/// Each q and k head of each row of `qkv` turned by its position's angles
/// (column `i` with `i + D/2`; `inverse` turns back), v copied.
pub fn rope_forward<F: Real>(
    qkv: &[F],     // [B, T, (H + 2K)·D]
    out: &mut [F], // [B, T, (H + 2K)·D]
    d: &AttentionDims,
    theta: f64,
    inverse: bool,
) {
    let (t, hd, half) = (d.t, d.head_dim, d.head_dim / 2);
    let rotated = d.v_start(); // q and k heads; v after them is copied
    let sign = if inverse { -1.0 } else { 1.0 };
    let freqs: Vec<f64> = (0..half).map(|i| inv_freq(theta, i, hd)).collect();
    let row = |(r, (o, x)): (usize, (&mut [F], &[F]))| {
        let pos = (r % t) as f64;
        let cs: Vec<(F, F)> = freqs
            .iter()
            .map(|f| {
                let a = pos * f;
                (F::c(a.cos()), F::c(sign * a.sin()))
            })
            .collect();
        for head in (0..rotated).step_by(hd) {
            for (i, &(cos, sin)) in cs.iter().enumerate() {
                let (x1, x2) = (x[head + i], x[head + half + i]);
                o[head + i] = x1 * cos - x2 * sin;
                o[head + half + i] = x2 * cos + x1 * sin;
            }
        }
        o[rotated..].copy_from_slice(&x[rotated..]);
    };
    let w = d.row();
    if out.len() >= super::elementwise::PAR_MIN {
        out.par_chunks_mut(w)
            .zip(qkv.par_chunks(w))
            .enumerate()
            .for_each(row);
    } else {
        out.chunks_mut(w)
            .zip(qkv.chunks(w))
            .enumerate()
            .for_each(row);
    }
}

/// Runs [`Op::Rope`]; the sizes come from `qkv`'s shape.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    match op {
        Op::Rope {
            n_head,
            n_kv_head,
            theta,
            inverse,
        } => {
            let d = AttentionDims::of(&ins[0].shape, *n_head, *n_kv_head)?;
            rope_forward(a[0].f(op.name())?, o[0], &d, *theta, *inverse);
            Ok(())
        }
        _ => Err(misrouted(op)),
    }
}
