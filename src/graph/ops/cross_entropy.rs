//! Cross-entropy of logits against integer targets, mean over tokens, fused with
//! its softmax so the probabilities are never stored. A row's logits may be
//! longer than its classes (a vocabulary padded to a multiple of 128 for the
//! logits GEMM): the logits past `classes` are no class at all, absent from
//! the softmax, and their gradient is exactly 0.

use super::{same_float, stat_dtype, Meta};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// `logits [.., V]`, `targets [..] i32` → `loss []`. Logits may be f16/bf16:
/// kernels widen to f32, so the loss is f32 (f64 for f64 logits). Taking
/// low-precision logits directly saves the f32 copy of the largest activation
/// of a language model (3 GiB for GPT-2 at 16 × 1024).
pub fn infer(ins: &[Meta], classes: usize) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("cross_entropy", &ins[..1])?;
    check_targets(ins[0].0, ins[1], classes)?;
    Ok(vec![(Shape::scalar(), stat_dtype(dt))])
}

fn check_targets(logits: &Shape, (t, tdt): Meta, classes: usize) -> Result<()> {
    if tdt != DType::I32 {
        return Err(Error::dtype("cross_entropy", "i32 targets", tdt));
    }
    if logits.rank() == 0 || &logits.dims()[..logits.rank() - 1] != t.dims() {
        return Err(Error::shape(
            "cross_entropy",
            format!("targets {t} must be logits {logits} without its last dim"),
        ));
    }
    if classes == 0 || classes > logits.last() {
        return Err(Error::shape(
            "cross_entropy",
            format!("{classes} classes for logits {logits}: need 1 to the last dim"),
        ));
    }
    Ok(())
}

fn check_dloss(op: &'static str, dt: DType, (s, d): Meta) -> Result<()> {
    if d != stat_dtype(dt) || s.rank() != 0 {
        return Err(Error::shape(
            op,
            format!(
                "dloss must be a {} scalar for {dt} logits, got {d} {s}",
                stat_dtype(dt)
            ),
        ));
    }
    Ok(())
}

/// `logits, targets, dloss []` → `dlogits [.., V]` in the logits' dtype (the
/// loss's gradient `dloss` has the loss's dtype).
pub fn infer_backward(ins: &[Meta], classes: usize) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("cross_entropy_backward", &ins[..1])?;
    check_targets(ins[0].0, ins[1], classes)?;
    check_dloss("cross_entropy_backward", dt, ins[2])?;
    Ok(vec![(ins[0].0.clone(), dt)])
}

/// [`Op::CrossEntropyFused`]: `logits, targets, dloss []` → `loss []` (the
/// loss's dtype) and `dlogits [.., V]` (the logits').
pub fn infer_fused(ins: &[Meta], classes: usize) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("cross_entropy_fused", &ins[..1])?;
    check_targets(ins[0].0, ins[1], classes)?;
    check_dloss("cross_entropy_fused", dt, ins[2])?;
    Ok(vec![
        (Shape::scalar(), stat_dtype(dt)),
        (ins[0].0.clone(), dt),
    ])
}

/// Records [`Op::CrossEntropyBackward`] for the logits; the targets get no
/// gradient.
pub fn vjp(g: &mut Graph, ins: &[Value], dy: Value, classes: usize) -> Result<Vec<Option<Value>>> {
    let d = g.apply(Op::CrossEntropyBackward { classes }, &[ins[0], ins[1], dy])?;
    Ok(vec![Some(d[0]), None])
}
