//! Sum, mean and expand on the cpu, accumulated in row-major order so the
//! results do not depend on the thread count.

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::cpu::simd::wide;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::Op;
use crate::tensor::Shape;

/// For each element of a tensor of shape `full`, the linear index into the same
/// tensor with `axes` removed, visited in row-major order of `full`.
fn reduced_indices(full: &Shape, axes: &[usize]) -> impl Iterator<Item = usize> {
    let dims = full.dims().to_vec();
    // Stride of each full dim in the reduced layout (0 along reduced axes).
    let mut strides = vec![0usize; dims.len()];
    let mut acc = 1;
    for i in (0..dims.len()).rev() {
        if !axes.contains(&i) {
            strides[i] = acc;
            acc *= dims[i];
        }
    }
    let n = full.numel();
    let mut idx = vec![0usize; dims.len()];
    let mut lin = 0usize;
    (0..n).map(move |k| {
        if k > 0 {
            for i in (0..dims.len()).rev() {
                idx[i] += 1;
                lin += strides[i];
                if idx[i] < dims[i] {
                    break;
                }
                lin -= strides[i] * dims[i];
                idx[i] = 0;
            }
        }
        lin
    })
}

fn is_prefix(axes: &[usize]) -> bool {
    axes.iter().enumerate().all(|(i, &a)| i == a)
}

/// Sum over `axes`, accumulated in row-major order (deterministic); `mean` divides.
pub fn sum_forward<F: Real>(x: &[F], out: &mut [F], s: &Shape, axes: &[usize], mean: bool) {
    out.fill(F::zero());
    if is_prefix(axes) {
        // Leading axes (bias gradients): rows added in order.
        wide(
            #[inline(always)]
            || {
                for row in x.chunks(out.len().max(1)) {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o += v;
                    }
                }
            },
        );
    } else {
        for (&v, j) in x.iter().zip(reduced_indices(s, axes)) {
            out[j] += v;
        }
    }
    if mean {
        let n = F::c((x.len() / out.len().max(1)) as f64);
        out.iter_mut().for_each(|o| *o = *o / n);
    }
}

/// Fills `out` (of shape `out_shape`) with `x` repeated along `axes`.
pub fn expand_forward<F: Real>(x: &[F], out: &mut [F], out_shape: &Shape, axes: &[usize]) {
    if is_prefix(axes) {
        for row in out.chunks_mut(x.len().max(1)) {
            row.copy_from_slice(x);
        }
    } else {
        for (o, j) in out.iter_mut().zip(reduced_indices(out_shape, axes)) {
            *o = x[j];
        }
    }
}

/// Runs [`Op::Sum`], [`Op::Mean`] or [`Op::Expand`] on an operand of the shape
/// in `ins`.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    let s = &ins[0].shape;
    match op {
        Op::Sum { axes } => sum_forward(a[0].f(n)?, o[0], s, axes, false),
        Op::Mean { axes } => sum_forward(a[0].f(n)?, o[0], s, axes, true),
        Op::Expand { axes, shape } => expand_forward(a[0].f(n)?, o[0], shape, axes),
        _ => return Err(misrouted(op)),
    }
    Ok(())
}
