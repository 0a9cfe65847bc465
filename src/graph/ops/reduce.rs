//! Sum and mean over axes, and their adjoint `expand` (repeat along new axes).

use super::{same_float, Meta, Real};
use crate::error::{Error, Result};
use crate::graph::{Graph, Value};
use crate::tensor::{DType, Shape};

fn check_axes(op: &'static str, rank: usize, axes: &[usize]) -> Result<()> {
    let sorted = axes.windows(2).all(|w| w[0] < w[1]);
    if !sorted || axes.iter().any(|&a| a >= rank) {
        return Err(Error::shape(
            op,
            format!("axes {axes:?} must be increasing and below rank {rank}"),
        ));
    }
    Ok(())
}

fn drop_axes(s: &Shape, axes: &[usize]) -> Shape {
    Shape(
        s.dims()
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect(),
    )
}

/// Shape rule of [`Op::Sum`](crate::graph::Op::Sum) and
/// [`Op::Mean`](crate::graph::Op::Mean): the operand's shape without `axes`, which
/// must be strictly increasing and below the rank.
pub fn infer_reduce(op: &'static str, ins: &[Meta], axes: &[usize]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float(op, ins)?;
    check_axes(op, ins[0].0.rank(), axes)?;
    Ok(vec![(drop_axes(ins[0].0, axes), dt)])
}

/// Shape rule of [`Op::Expand`](crate::graph::Op::Expand): `shape`, provided that
/// removing `axes` from it gives the operand's shape.
pub fn infer_expand(ins: &[Meta], axes: &[usize], shape: &Shape) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("expand", ins)?;
    check_axes("expand", shape.rank(), axes)?;
    if &drop_axes(shape, axes) != ins[0].0 {
        return Err(Error::shape(
            "expand",
            format!("{} is not {shape} without axes {axes:?}", ins[0].0),
        ));
    }
    Ok(vec![(shape.clone(), dt)])
}

/// Gradient of a sum over `axes` (a mean when `mean`): `dy` expanded back to the
/// operand's shape, divided by the number of summed elements for a mean.
pub fn vjp_sum(
    g: &mut Graph,
    ins: &[Value],
    dy: Value,
    axes: &[usize],
    mean: bool,
) -> Result<Vec<Option<Value>>> {
    let s = g.shape(ins[0]).clone();
    let mut d = g.expand(dy, axes, s.clone())?;
    if mean {
        let n: usize = axes.iter().map(|&a| s.dims()[a]).product();
        d = g.scale(d, 1.0 / n as f64)?;
    }
    Ok(vec![Some(d)])
}

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
        for row in x.chunks(out.len().max(1)) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
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

/// A sum, mean or expand as the GPU kernels take it: the full shape padded to
/// rank 6, a bitmask of the reduced axes, how many elements each output sums,
/// and the factor applied (1/count for a mean).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReducePlan {
    /// Rank of the full shape (at most 6).
    pub rank: usize,
    /// The full shape, padded with 1s to six dims.
    pub dims: [usize; 6],
    /// Bit `i` set when axis `i` is reduced (or, for an expand, repeated along).
    pub mask: u32,
    /// Elements summed into each output: the product of the reduced dims.
    pub count: usize,
    /// Factor each sum is multiplied by: `1 / count` for a mean, else 1.
    pub scale: f64,
}

/// `None` when the shape has more than 6 dims.
pub fn reduce_plan(full: &Shape, axes: &[usize], mean: bool) -> Option<ReducePlan> {
    if full.rank() > 6 {
        return None;
    }
    let mut dims = [1usize; 6];
    dims[..full.rank()].copy_from_slice(full.dims());
    let count: usize = axes.iter().map(|&a| full.dims()[a]).product();
    Some(ReducePlan {
        rank: full.rank(),
        dims,
        mask: axes.iter().fold(0, |m, &a| m | (1 << a)),
        count,
        scale: if mean { 1.0 / count as f64 } else { 1.0 },
    })
}
