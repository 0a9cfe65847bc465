//! Layout copies on the cpu: transpose, split, concat (reshape is a view and
//! runs no kernel).

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::shape::outer_inner;
use crate::graph::ops::Op;
use crate::tensor::Shape;

/// Swaps axes `a < b`: viewed as `[outer, A, mid, B, inner]` → `[outer, B, mid, A, inner]`.
pub fn transpose_forward<F: Real>(x: &[F], out: &mut [F], s: &Shape, a: usize, b: usize) {
    let (a, b) = (a.min(b), a.max(b));
    if a == b {
        out.copy_from_slice(x);
        return;
    }
    let d = s.dims();
    let outer: usize = d[..a].iter().product();
    let (da, db) = (d[a], d[b]);
    let mid: usize = d[a + 1..b].iter().product();
    let inner: usize = d[b + 1..].iter().product();
    let mut o = 0;
    for p in 0..outer {
        for j in 0..db {
            for m in 0..mid {
                for i in 0..da {
                    let src = (((p * da + i) * mid + m) * db + j) * inner;
                    out[o..o + inner].copy_from_slice(&x[src..src + inner]);
                    o += inner;
                }
            }
        }
    }
}

/// Copies `x` (of shape `s`) into `outs`, consecutive slices along `axis`.
pub fn split_forward<F: Real>(x: &[F], outs: &mut [&mut [F]], s: &Shape, axis: usize) {
    let (outer, inner) = outer_inner(s, axis);
    let row = s.dims()[axis] * inner;
    for p in 0..outer {
        let mut off = p * row;
        for o in outs.iter_mut() {
            let n = o.len() / outer;
            o[p * n..(p + 1) * n].copy_from_slice(&x[off..off + n]);
            off += n;
        }
    }
}

/// Copies `xs` into `out` (of shape `out_shape`), one after another along `axis`.
pub fn concat_forward<F: Real>(xs: &[&[F]], out: &mut [F], out_shape: &Shape, axis: usize) {
    let (outer, inner) = outer_inner(out_shape, axis);
    let row = out_shape.dims()[axis] * inner;
    for p in 0..outer {
        let mut off = p * row;
        for x in xs {
            let n = x.len() / outer;
            out[off..off + n].copy_from_slice(&x[p * n..(p + 1) * n]);
            off += n;
        }
    }
}

/// Runs [`Op::Transpose`], [`Op::Split`] or [`Op::Concat`] on operands of the
/// shapes in `ins`.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    let shape = |i: usize| &ins[i].shape;
    match op {
        Op::Transpose { a: x, b: y } => transpose_forward(a[0].f(n)?, o[0], shape(0), *x, *y),
        Op::Split { axis, .. } => split_forward(a[0].f(n)?, o, shape(0), *axis),
        Op::Concat { axis } => {
            let xs = a.iter().map(|x| x.f(n)).collect::<Result<Vec<_>>>()?;
            let mut dims = shape(0).dims().to_vec();
            dims[*axis] = ins.iter().map(|t| t.shape.dims()[*axis]).sum();
            concat_forward(&xs, o[0], &dims.into(), *axis)
        }
        _ => return Err(misrouted(op)),
    }
    Ok(())
}
