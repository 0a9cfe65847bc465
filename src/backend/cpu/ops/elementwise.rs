//! Elementwise kernels on the cpu: broadcast add and mul, scale, GELU (tanh
//! form) and its fused bias variant, SiLU.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::cpu::simd::wide;
use crate::error::Result;
use crate::graph::ops::Op;

/// Below this many elements a kernel runs on one thread: spawning costs more.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Elements per rayon task in the maps: large enough that the inner loop is a
/// long SIMD run, small enough that two cores share a 64 × 256 activation.
const CHUNK: usize = 1 << 13;

/// `out = a ⊕ b` with `b` repeating over `a`'s leading dims.
fn broadcast_map<F: Real>(a: &[F], b: &[F], out: &mut [F], f: impl Fn(F, F) -> F + Sync) {
    let nb = b.len();
    let row = |(o, x): (&mut [F], &[F])| {
        wide(
            #[inline(always)]
            || {
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(b) {
                    *o = f(x, y);
                }
            },
        )
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
    let run = |(o, x): (&mut [F], &[F])| {
        wide(
            #[inline(always)]
            || {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = f(v);
                }
            },
        )
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(run);
    } else {
        run((out, x));
    }
}

/// `out[i] = f(x[i], y[i])` over equal-length operands.
fn zip_map<F: Real>(x: &[F], y: &[F], out: &mut [F], f: impl Fn(F, F) -> F + Sync) {
    let run = |(o, (x, y)): (&mut [F], (&[F], &[F]))| {
        wide(
            #[inline(always)]
            || {
                for ((o, &v), &g) in o.iter_mut().zip(x).zip(y) {
                    *o = f(v, g);
                }
            },
        )
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
            .for_each(run);
    } else {
        run((out, (x, y)));
    }
}

const GELU_K: f64 = 0.044715;

/// GELU's constants: `2·√(2/π)`, `k`, and `3k`.
fn gelu_consts<F: Real>() -> (F, F, F) {
    let s = (2.0 / std::f64::consts::PI).sqrt();
    (F::c(2.0 * s), F::c(GELU_K), F::c(3.0 * GELU_K))
}

/// GELU, tanh form, as `v · σ(2u)` with `u = √(2/π) (v + k v³)`.
///
/// `0.5 v (1 + tanh u)` is the same function (`(1 + tanh u) / 2 = σ(2u)`),
/// but needs a tanh, which has no vectorisable form here, and loses relative
/// accuracy where `tanh u` nears −1; `σ` needs one `exp` and does not.
#[inline(always)]
fn gelu<F: Real>(v: F) -> F {
    let (s2, k, _) = gelu_consts::<F>();
    v / (F::one() + (-(s2 * (v + k * v * v * v))).vexp())
}

/// `gelu'(v) = σ + 2 v σ (1 − σ) √(2/π) (1 + 3k v²)`, `σ = σ(2u)`.
#[inline(always)]
fn gelu_grad<F: Real>(v: F) -> F {
    let (s2, k, k3) = gelu_consts::<F>();
    let one = F::one();
    let sg = one / (one + (-(s2 * (v + k * v * v * v))).vexp());
    sg + v * sg * (one - sg) * s2 * (one + k3 * v * v)
}

/// GELU (tanh form) of each element.
pub fn gelu_forward<F: Real>(x: &[F], out: &mut [F]) {
    map(x, out, gelu)
}

/// `out = gelu(x + b)` (tanh form), `b` repeating over `x`'s leading dims.
pub fn bias_gelu_forward<F: Real>(x: &[F], b: &[F], out: &mut [F]) {
    broadcast_map(x, b, out, |x, b| gelu(x + b))
}

/// `dh = gelu'(x + b) · dy`, the pre-activation recomputed row by row.
pub fn bias_gelu_backward<F: Real>(x: &[F], b: &[F], dy: &[F], dh: &mut [F]) {
    let nb = b.len();
    let row = |(d, (x, g)): (&mut [F], (&[F], &[F]))| {
        wide(
            #[inline(always)]
            || {
                for (((d, &x), &g), &b) in d.iter_mut().zip(x).zip(g).zip(b) {
                    *d = gelu_grad(x + b) * g;
                }
            },
        )
    };
    if dh.len() >= PAR_MIN {
        dh.par_chunks_mut(nb)
            .zip(x.par_chunks(nb).zip(dy.par_chunks(nb)))
            .for_each(row);
    } else {
        dh.chunks_mut(nb)
            .zip(x.chunks(nb).zip(dy.chunks(nb)))
            .for_each(row);
    }
}

/// `dx = gelu'(x) · dy`, the derivative of the tanh form.
pub fn gelu_backward<F: Real>(x: &[F], dy: &[F], dx: &mut [F]) {
    zip_map(x, dy, dx, |v, g| gelu_grad(v) * g)
}

/// SiLU: `x · σ(x) = x / (1 + e^(−x))`.
pub fn silu_forward<F: Real>(x: &[F], out: &mut [F]) {
    let one = F::one();
    map(x, out, |v| v / (one + (-v).vexp()))
}

/// `dx = silu'(x) · dy = σ(x) (1 + x (1 − σ(x))) · dy`.
pub fn silu_backward<F: Real>(x: &[F], dy: &[F], dx: &mut [F]) {
    let one = F::one();
    zip_map(x, dy, dx, |v, g| {
        let s = one / (one + (-v).vexp());
        s * (one + v * (one - s)) * g
    })
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
