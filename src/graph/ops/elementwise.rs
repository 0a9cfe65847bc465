//! Elementwise ops: broadcast add and mul (bias, positions, residual), scale, GELU.

use super::{mixed, same_float, Meta};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// Shape rule of one-operand float ops (scale, GELU, softmax): the operand's
/// shape and dtype.
pub fn infer_unary(op: &'static str, ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float(op, ins)?;
    Ok(vec![(ins[0].0.clone(), dt)])
}

/// Shape rule of ops whose float operands must all have one shape (the GELU and
/// softmax backward ops): that shape.
pub fn infer_same(op: &'static str, ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float(op, ins)?;
    if ins.iter().any(|m| m.0 != ins[0].0) {
        return Err(Error::shape(
            op,
            format!(
                "operands must have one shape, got {} and {}",
                ins[0].0, ins[1].0
            ),
        ));
    }
    Ok(vec![(ins[0].0.clone(), dt)])
}

/// `b` broadcasts to `a` when its shape is a suffix of `a`'s.
pub fn infer_broadcast(op: &'static str, ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float(op, ins)?;
    let (a, b) = (ins[0].0, ins[1].0);
    if !is_suffix(b, a) {
        return Err(Error::shape(
            op,
            format!("{b} does not broadcast to {a} (it must equal a trailing part of it)"),
        ));
    }
    Ok(vec![(a.clone(), dt)])
}

/// [`infer_broadcast`], but the residual add also takes a low-precision `b`
/// next to an f32 `a` (a projection added to the f32 stream): the result is
/// f32 and the kernel widens `b` as it reads it, so no cast of `b` is stored.
pub fn infer_add(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let (a, b) = (ins[0].1, ins[1].1);
    if a == b || !mixed(a, b) {
        return infer_broadcast("add", ins);
    }
    let widened = [ins[0], (ins[1].0, a)];
    infer_broadcast("add", &widened)
}

fn is_suffix(b: &Shape, a: &Shape) -> bool {
    b.rank() <= a.rank() && a.dims()[a.rank() - b.rank()..] == *b.dims()
}

/// Sums a gradient of `a`'s shape down to a broadcast operand's shape.
fn unbroadcast(g: &mut Graph, grad: Value, to: &Shape) -> Result<Value> {
    let lead = g.shape(grad).rank() - to.rank();
    if lead == 0 {
        return Ok(grad);
    }
    let axes: Vec<usize> = (0..lead).collect();
    g.sum(grad, &axes)
}

/// `da = dy`; `db = dy` summed over the leading dims `b` was broadcast across,
/// in `b`'s dtype (a low `b` of a mixed add gets its gradient rounded, as the
/// cast autocast would otherwise have recorded would give it).
pub fn vjp_add(g: &mut Graph, ins: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let bs = g.shape(ins[1]).clone();
    let mut db = unbroadcast(g, dy, &bs)?;
    let bt = g.dtype(ins[1]);
    if g.dtype(db) != bt {
        db = g.cast(db, bt)?;
    }
    Ok(vec![Some(dy), Some(db)])
}

/// `da = dy · b`; `db = dy · a` summed over the leading dims `b` was broadcast
/// across.
pub fn vjp_mul(g: &mut Graph, ins: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let (a, b) = (ins[0], ins[1]);
    let da = g.mul(dy, b)?;
    let bs = g.shape(b).clone();
    let dyb = g.mul(dy, a)?;
    let db = unbroadcast(g, dyb, &bs)?;
    Ok(vec![Some(da), Some(db)])
}

/// `x`, `b` (broadcast), `dy` → `dh` (the gradient of `x + b`, `x`'s shape).
pub fn infer_bias_gelu_backward(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    infer_broadcast("bias_gelu_backward", &ins[..2])?;
    let dt = same_float("bias_gelu_backward", ins)?;
    if ins[2].0 != ins[0].0 {
        return Err(Error::shape("bias_gelu_backward", "dy must have x's shape"));
    }
    Ok(vec![(ins[0].0.clone(), dt)])
}

/// The pre-activation `x + b` is recomputed in the backward kernel, never stored.
pub fn vjp_bias_gelu(g: &mut Graph, ins: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let dh = g.apply(Op::BiasGeluBackward, &[ins[0], ins[1], dy])?[0];
    let bs = g.shape(ins[1]).clone();
    let db = unbroadcast(g, dh, &bs)?;
    Ok(vec![Some(dh), Some(db)])
}

/// Records [`Op::GeluBackward`] on the saved input `x`.
pub fn vjp_gelu(g: &mut Graph, ins: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    Ok(vec![Some(g.apply(Op::GeluBackward, &[ins[0], dy])?[0])])
}
