//! Cross-entropy on the cpu, its softmax fused in: rows in parallel, the loss
//! summed in row order.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::graph::ops::Op;

fn target(t: i32, v: usize) -> Result<usize> {
    if t < 0 || t as usize >= v {
        return Err(Error::Kernel {
            op: "cross_entropy",
            detail: format!("target {t} is outside the {v} classes of the logits"),
        });
    }
    Ok(t as usize)
}

fn logsumexp<F: Real>(x: &[F]) -> F {
    let m = x.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
    m + x.iter().map(|&v| (v - m).exp()).sum::<F>().ln()
}

/// `loss[0]` = the mean over rows of `logsumexp(logits[i]) − logits[i, targets[i]]`.
/// Returns [`Error::Kernel`] for a target outside `0..v`.
pub fn cross_entropy_forward<F: Real>(
    logits: &[F],    // [N, V]
    targets: &[i32], // [N]
    loss: &mut [F],  // []
    v: usize,
) -> Result<()> {
    let per_row: Vec<F> = logits
        .par_chunks(v)
        .zip(targets.par_iter())
        .map(|(x, &t)| Ok(logsumexp(x) - x[target(t, v)?]))
        .collect::<Result<_>>()?;
    // Summed in row order: the loss is bit-identical whatever the thread count.
    let n = F::c(per_row.len() as f64);
    loss[0] = per_row.into_iter().sum::<F>() / n;
    Ok(())
}

/// `dlogits[i] = (softmax(logits[i]) − onehot(targets[i])) · dloss / N`.
/// Returns [`Error::Kernel`] for a target outside `0..v`.
pub fn cross_entropy_backward<F: Real>(
    logits: &[F],      // [N, V]
    targets: &[i32],   // [N]
    dloss: &[F],       // []
    dlogits: &mut [F], // [N, V]
    v: usize,
) -> Result<()> {
    let scale = dloss[0] / F::c(targets.len() as f64);
    dlogits
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v).zip(targets.par_iter()))
        .try_for_each(|(d, (x, &t))| {
            let t = target(t, v)?;
            super::softmax::softmax_row(x, d);
            d[t] = d[t] - F::one();
            d.iter_mut().for_each(|g| *g = *g * scale);
            Ok(())
        })
}

/// Runs [`Op::CrossEntropy`] or [`Op::CrossEntropyBackward`]: `a` holds the
/// logits, the targets and (backward) `dloss`; `V` is the logits' last dim.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    let v = ins[0].shape.last();
    match op {
        Op::CrossEntropy => cross_entropy_forward(a[0].f(n)?, a[1].ids(n)?, o[0], v),
        Op::CrossEntropyBackward => {
            cross_entropy_backward(a[0].f(n)?, a[1].ids(n)?, a[2].f(n)?, o[0], v)
        }
        _ => Err(misrouted(op)),
    }
}
