//! Elementwise ops: broadcast add and mul (bias, positions, residual), scale, GELU.

use rayon::prelude::*;

use super::{same_float, Meta, Real};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// Below this many elements a kernel runs on one thread: spawning costs more.
pub(crate) const PAR_MIN: usize = 1 << 15;

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

/// `da = dy`; `db = dy` summed over the leading dims `b` was broadcast across.
pub fn vjp_add(g: &mut Graph, ins: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let bs = g.shape(ins[1]).clone();
    let db = unbroadcast(g, dy, &bs)?;
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

/// `out = a ⊕ b` with `b` repeating over `a`'s leading dims.
fn broadcast_map<F: Real>(a: &[F], b: &[F], out: &mut [F], f: impl Fn(F, F) -> F + Sync) {
    let nb = b.len();
    let row = |(o, x): (&mut [F], &[F])| {
        for ((o, &x), &y) in o.iter_mut().zip(x).zip(b) {
            *o = f(x, y);
        }
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(nb).zip(a.par_chunks(nb)).for_each(row);
    } else {
        out.chunks_mut(nb).zip(a.chunks(nb)).for_each(row);
    }
}

/// `out = a + b`, `b` repeating over `a`'s leading dims.
pub fn add_forward<F: Real>(a: &[F], b: &[F], out: &mut [F]) {
    broadcast_map(a, b, out, |x, y| x + y)
}

/// `out = a * b`, `b` repeating over `a`'s leading dims.
pub fn mul_forward<F: Real>(a: &[F], b: &[F], out: &mut [F]) {
    broadcast_map(a, b, out, |x, y| x * y)
}

/// `out = x * factor`.
pub fn scale_forward<F: Real>(x: &[F], out: &mut [F], factor: f64) {
    let s = F::c(factor);
    map(x, out, |v| v * s)
}

fn map<F: Real>(x: &[F], out: &mut [F], f: impl Fn(F) -> F + Sync) {
    if out.len() >= PAR_MIN {
        out.par_iter_mut().zip(x).for_each(|(o, &v)| *o = f(v));
    } else {
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v));
    }
}

const GELU_K: f64 = 0.044715;

fn sqrt_2_over_pi<F: Real>() -> F {
    F::c((2.0 / std::f64::consts::PI).sqrt())
}

/// GELU, tanh form: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub fn gelu_forward<F: Real>(x: &[F], out: &mut [F]) {
    let (s, k, half, one) = (sqrt_2_over_pi::<F>(), F::c(GELU_K), F::c(0.5), F::one());
    map(x, out, |v| {
        half * v * (one + (s * (v + k * v * v * v)).tanh())
    })
}

/// `out = gelu(x + b)` (tanh form), `b` repeating over `x`'s leading dims.
pub fn bias_gelu_forward<F: Real>(x: &[F], b: &[F], out: &mut [F]) {
    let (s, k, half, one) = (sqrt_2_over_pi::<F>(), F::c(GELU_K), F::c(0.5), F::one());
    broadcast_map(x, b, out, |x, b| {
        let v = x + b;
        half * v * (one + (s * (v + k * v * v * v)).tanh())
    })
}

/// `dh = gelu'(x + b) · dy`, the pre-activation recomputed.
pub fn bias_gelu_backward<F: Real>(x: &[F], b: &[F], dy: &[F], dh: &mut [F]) {
    let mut h = vec![F::zero(); x.len()];
    add_forward(x, b, &mut h);
    gelu_backward(&h, dy, dh)
}

/// `dx = gelu'(x) · dy`, the derivative of the tanh form.
pub fn gelu_backward<F: Real>(x: &[F], dy: &[F], dx: &mut [F]) {
    let (s, k, half, one, three) = (
        sqrt_2_over_pi::<F>(),
        F::c(GELU_K),
        F::c(0.5),
        F::one(),
        F::c(3.0),
    );
    let f = |(d, (&v, &g)): (&mut F, (&F, &F))| {
        let u = s * (v + k * v * v * v);
        let t = u.tanh();
        let sech2 = one - t * t;
        let local = half * (one + t) + half * v * sech2 * s * (one + three * k * v * v);
        *d = local * g;
    };
    if dx.len() >= PAR_MIN {
        dx.par_iter_mut().zip(x.par_iter().zip(dy)).for_each(f);
    } else {
        dx.iter_mut().zip(x.iter().zip(dy)).for_each(f);
    }
}
