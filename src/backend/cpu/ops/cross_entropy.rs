//! Cross-entropy on the cpu, its softmax fused in: rows in parallel, the loss
//! summed in row order. Only the first `classes` logits of a row are classes;
//! the rest (vocabulary padding) are left out of the softmax and get a zero
//! gradient.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::graph::ops::Op;

fn target(t: i32, classes: usize) -> Result<usize> {
    if t < 0 || t as usize >= classes {
        return Err(Error::Kernel {
            op: "cross_entropy",
            detail: format!("target {t} is outside the {classes} classes of the logits"),
        });
    }
    Ok(t as usize)
}

fn logsumexp<F: Real>(x: &[F]) -> F {
    let m = x.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
    m + x.iter().map(|&v| (v - m).exp()).sum::<F>().ln()
}

/// Row losses added in row order: the mean is bit-identical whatever the
/// thread count.
fn mean<F: Real>(per_row: Vec<F>) -> F {
    let n = F::c(per_row.len() as f64);
    per_row.into_iter().sum::<F>() / n
}

/// `loss[0]` = the mean over rows of `logsumexp(x) − x[target]`, `x` a row's
/// first `classes` logits. Returns [`Error::Kernel`] for a target outside
/// `0..classes`.
pub fn cross_entropy_forward<F: Real>(
    logits: &[F],    // [N, V]
    targets: &[i32], // [N]
    loss: &mut [F],  // []
    v: usize,
    classes: usize,
) -> Result<()> {
    let per_row: Vec<F> = logits
        .par_chunks(v)
        .zip(targets.par_iter())
        .map(|(x, &t)| Ok(logsumexp(&x[..classes]) - x[target(t, classes)?]))
        .collect::<Result<_>>()?;
    loss[0] = mean(per_row);
    Ok(())
}

/// One row's gradient into `d` (the row's `v` slots): `(softmax(x) −
/// onehot(t)) · scale` over the first `classes`, 0 past them.
fn row_gradient<F: Real>(x: &[F], t: usize, scale: F, d: &mut [F], classes: usize) {
    let (d, pad) = d.split_at_mut(classes);
    super::softmax::softmax_row(&x[..classes], d);
    d[t] = d[t] - F::one();
    d.iter_mut().for_each(|g| *g = *g * scale);
    pad.fill(F::zero());
}

/// `dlogits[i] = (softmax(logits[i]) − onehot(targets[i])) · dloss / N` over
/// the first `classes` columns, 0 past them. Returns [`Error::Kernel`] for a
/// target outside `0..classes`.
pub fn cross_entropy_backward<F: Real>(
    logits: &[F],      // [N, V]
    targets: &[i32],   // [N]
    dloss: &[F],       // []
    dlogits: &mut [F], // [N, V]
    v: usize,
    classes: usize,
) -> Result<()> {
    let scale = dloss[0] / F::c(targets.len() as f64);
    dlogits
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v).zip(targets.par_iter()))
        .try_for_each(|(d, (x, &t))| {
            row_gradient(x, target(t, classes)?, scale, d, classes);
            Ok(())
        })
}

/// [`Op::CrossEntropyFused`]: the loss of [`cross_entropy_forward`] and the
/// gradient of [`cross_entropy_backward`] (for loss gradient `dloss`) from
/// one visit of each row.
pub fn cross_entropy_fused<F: Real>(
    logits: &[F],      // [N, V]
    targets: &[i32],   // [N]
    dloss: &[F],       // []
    loss: &mut [F],    // []
    dlogits: &mut [F], // [N, V]
    v: usize,
    classes: usize,
) -> Result<()> {
    let scale = dloss[0] / F::c(targets.len() as f64);
    let per_row: Vec<F> = dlogits
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v).zip(targets.par_iter()))
        .map(|(d, (x, &t))| {
            let t = target(t, classes)?;
            let l = logsumexp(&x[..classes]) - x[t];
            row_gradient(x, t, scale, d, classes);
            Ok(l)
        })
        .collect::<Result<_>>()?;
    loss[0] = mean(per_row);
    Ok(())
}

/// Runs the cross-entropy ops: `a` holds the logits, the targets and (backward,
/// fused) `dloss`; `V` is the logits' last dim.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    let v = ins[0].shape.last();
    match *op {
        Op::CrossEntropy { classes } => {
            cross_entropy_forward(a[0].f(n)?, a[1].ids(n)?, o[0], v, classes)
        }
        Op::CrossEntropyBackward { classes } => {
            cross_entropy_backward(a[0].f(n)?, a[1].ids(n)?, a[2].f(n)?, o[0], v, classes)
        }
        Op::CrossEntropyFused { classes } => {
            let [loss, dlogits] = o else {
                return Err(misrouted(op));
            };
            let (x, t, dl) = (a[0].f(n)?, a[1].ids(n)?, a[2].f(n)?);
            cross_entropy_fused(x, t, dl, loss, dlogits, v, classes)
        }
        _ => Err(misrouted(op)),
    }
}
