//! Sum and mean over axes, and their adjoint `expand` (repeat along new axes).

use super::{same_float, Meta};
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
