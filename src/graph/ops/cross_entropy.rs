//! Cross-entropy of logits against integer targets, mean over tokens, fused with
//! its softmax so the probabilities are never stored.

use rayon::prelude::*;

use super::{same_float, stat_dtype, Meta, Real};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// `logits [.., V]`, `targets [..] i32` → `loss []`. Logits may be f16/bf16:
/// kernels widen to f32, so the loss is f32 (f64 for f64 logits). Taking
/// low-precision logits directly saves the f32 copy of the largest activation
/// of a language model (3 GiB for GPT-2 at 16 × 1024).
pub fn infer(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("cross_entropy", &ins[..1])?;
    check_targets(ins[0].0, ins[1])?;
    Ok(vec![(Shape::scalar(), stat_dtype(dt))])
}

fn check_targets(logits: &Shape, (t, tdt): Meta) -> Result<()> {
    if tdt != DType::I32 {
        return Err(Error::dtype("cross_entropy", "i32 targets", tdt));
    }
    if logits.rank() == 0 || &logits.dims()[..logits.rank() - 1] != t.dims() {
        return Err(Error::shape(
            "cross_entropy",
            format!("targets {t} must be logits {logits} without its last dim"),
        ));
    }
    Ok(())
}

/// `logits, targets, dloss []` → `dlogits [.., V]` in the logits' dtype (the
/// loss's gradient `dloss` has the loss's dtype).
pub fn infer_backward(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("cross_entropy_backward", &ins[..1])?;
    check_targets(ins[0].0, ins[1])?;
    if ins[2].1 != stat_dtype(dt) || ins[2].0.rank() != 0 {
        return Err(Error::shape(
            "cross_entropy_backward",
            format!(
                "dloss must be a {} scalar for {dt} logits, got {} {}",
                stat_dtype(dt),
                ins[2].1,
                ins[2].0
            ),
        ));
    }
    Ok(vec![(ins[0].0.clone(), dt)])
}

/// Records [`Op::CrossEntropyBackward`] for the logits; the targets get no
/// gradient.
pub fn vjp(g: &mut Graph, ins: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let d = g.apply(Op::CrossEntropyBackward, &[ins[0], ins[1], dy])?;
    Ok(vec![Some(d[0]), None])
}

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
