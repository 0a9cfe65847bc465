//! Elementwise kernels on the cpu: broadcast add and mul, scale, GELU (tanh
//! form) and its fused bias variant, SiLU.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::error::Result;
use crate::graph::ops::Op;

/// Below this many elements a kernel runs on one thread: spawning costs more.
pub(crate) const PAR_MIN: usize = 1 << 15;

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

/// SiLU: `x · σ(x) = x / (1 + e^(−x))`.
pub fn silu_forward<F: Real>(x: &[F], out: &mut [F]) {
    let one = F::one();
    map(x, out, |v| v / (one + (-v).exp()))
}

/// `dx = silu'(x) · dy = σ(x) (1 + x (1 − σ(x))) · dy`.
pub fn silu_backward<F: Real>(x: &[F], dy: &[F], dx: &mut [F]) {
    let one = F::one();
    let f = |(d, (&v, &g)): (&mut F, (&F, &F))| {
        let s = one / (one + (-v).exp());
        *d = s * (one + v * (one - s)) * g;
    };
    if dx.len() >= PAR_MIN {
        dx.par_iter_mut().zip(x.par_iter().zip(dy)).for_each(f);
    } else {
        dx.iter_mut().zip(x.iter().zip(dy)).for_each(f);
    }
}

/// Runs one elementwise op; broadcast operands need no shapes (the kernels
/// repeat `b` over `a`'s length).
pub(super) fn run<F: Real>(op: &Op, a: &[In<F>], o: &mut [&mut [F]]) -> Result<()> {
    let n = op.name();
    match op {
        Op::Add => add_forward(a[0].f(n)?, a[1].f(n)?, o[0]),
        Op::Mul => mul_forward(a[0].f(n)?, a[1].f(n)?, o[0]),
        Op::Scale { factor } => scale_forward(a[0].f(n)?, o[0], *factor),
        Op::Gelu => gelu_forward(a[0].f(n)?, o[0]),
        Op::GeluBackward => gelu_backward(a[0].f(n)?, a[1].f(n)?, o[0]),
        Op::BiasGelu => bias_gelu_forward(a[0].f(n)?, a[1].f(n)?, o[0]),
        Op::BiasGeluBackward => bias_gelu_backward(a[0].f(n)?, a[1].f(n)?, a[2].f(n)?, o[0]),
        Op::Silu => silu_forward(a[0].f(n)?, o[0]),
        Op::SiluBackward => silu_backward(a[0].f(n)?, a[1].f(n)?, o[0]),
        _ => return Err(misrouted(op)),
    }
    Ok(())
}
