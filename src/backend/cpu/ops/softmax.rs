//! Softmax over the last dim on the cpu, rows in parallel.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::Op;

/// Numerically stable softmax of one row into `out`.
pub(crate) fn softmax_row<F: Real>(x: &[F], out: &mut [F]) {
    let m = x.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
    let mut sum = F::zero();
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m).exp();
        sum += *o;
    }
    let inv = F::one() / sum;
    out.iter_mut().for_each(|o| *o = *o * inv);
}

/// Softmax of each row of `v` elements, rows in parallel.
pub fn softmax_forward<F: Real>(
    x: &[F],     // [N, V]
    y: &mut [F], // [N, V]
    v: usize,
) {
    y.par_chunks_mut(v)
        .zip(x.par_chunks(v))
        .for_each(|(y, x)| softmax_row(x, y));
}

/// `dx = y ⊙ (dy − Σ y dy)` per row.
pub fn softmax_backward<F: Real>(
    y: &[F],      // [N, V]
    dy: &[F],     // [N, V]
    dx: &mut [F], // [N, V]
    v: usize,
) {
    dx.par_chunks_mut(v)
        .zip(y.par_chunks(v).zip(dy.par_chunks(v)))
        .for_each(|(dx, (y, dy))| {
            let s: F = y.iter().zip(dy).map(|(&a, &b)| a * b).sum();
            for ((d, &yy), &g) in dx.iter_mut().zip(y).zip(dy) {
                *d = yy * (g - s);
            }
        });
}

/// Runs [`Op::Softmax`] or [`Op::SoftmaxBackward`] over rows of the last dim of
/// the first operand.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    let v = ins[0].shape.last();
    match op {
        Op::Softmax => softmax_forward(a[0].f(n)?, o[0], v),
        Op::SoftmaxBackward => softmax_backward(a[0].f(n)?, a[1].f(n)?, o[0], v),
        _ => return Err(misrouted(op)),
    }
    Ok(())
}
