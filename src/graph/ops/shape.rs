//! Views and layout ops: reshape (an alias, no copy), transpose, split, concat.

use super::Meta;
use crate::error::{Error, Result};
use crate::graph::{Graph, Value};
use crate::tensor::{DType, Shape};

/// Shape rule of [`Op::Reshape`](crate::graph::Op::Reshape): `to`, if it holds as
/// many elements as the operand.
pub fn infer_reshape(ins: &[Meta], to: &Shape) -> Result<Vec<(Shape, DType)>> {
    let (s, dt) = ins[0];
    if s.numel() != to.numel() {
        return Err(Error::shape(
            "reshape",
            format!("{s} has {} elements, {to} has {}", s.numel(), to.numel()),
        ));
    }
    Ok(vec![(to.clone(), dt)])
}

fn check_axis(op: &'static str, s: &Shape, axis: usize) -> Result<()> {
    if axis >= s.rank() {
        return Err(Error::shape(
            op,
            format!("axis {axis} out of range for {s}"),
        ));
    }
    Ok(())
}

/// Shape rule of [`Op::Transpose`](crate::graph::Op::Transpose): the operand's dims
/// with `a` and `b` swapped; both axes must be below the rank.
pub fn infer_transpose(ins: &[Meta], a: usize, b: usize) -> Result<Vec<(Shape, DType)>> {
    let (s, dt) = ins[0];
    check_axis("transpose", s, a)?;
    check_axis("transpose", s, b)?;
    let mut d = s.dims().to_vec();
    d.swap(a, b);
    Ok(vec![(Shape(d), dt)])
}

/// Shape rule of [`Op::Split`](crate::graph::Op::Split): one output per size, the
/// operand's shape with dim `axis` set to that size.
pub fn infer_split(ins: &[Meta], axis: usize, sizes: &[usize]) -> Result<Vec<(Shape, DType)>> {
    let (s, dt) = ins[0];
    check_axis("split", s, axis)?;
    if sizes.iter().sum::<usize>() != s.dims()[axis] || sizes.contains(&0) {
        return Err(Error::shape(
            "split",
            format!("sizes {sizes:?} must be positive and sum to dim {axis} of {s}"),
        ));
    }
    Ok(sizes
        .iter()
        .map(|&n| {
            let mut d = s.dims().to_vec();
            d[axis] = n;
            (Shape(d), dt)
        })
        .collect())
}

/// Shape rule of [`Op::Concat`](crate::graph::Op::Concat): the float operands'
/// common shape with dim `axis` summed; all other dims must agree.
pub fn infer_concat(ins: &[Meta], axis: usize) -> Result<Vec<(Shape, DType)>> {
    let dt = super::same_float("concat", ins)?;
    let first = ins[0].0;
    check_axis("concat", first, axis)?;
    let mut total = 0;
    for &(s, _) in ins {
        let same_rest = s.rank() == first.rank()
            && (0..s.rank()).all(|i| i == axis || s.dims()[i] == first.dims()[i]);
        if !same_rest {
            return Err(Error::shape(
                "concat",
                format!("{s} and {first} differ outside axis {axis}"),
            ));
        }
        total += s.dims()[axis];
    }
    let mut d = first.dims().to_vec();
    d[axis] = total;
    Ok(vec![(Shape(d), dt)])
}

/// The parts' gradients concatenated along `axis`, with zeros (a `Fill`) for
/// parts that got none.
pub fn vjp_split(
    g: &mut Graph,
    ins: &[Value],
    outs: &[Value],
    douts: &[Option<Value>],
    axis: usize,
) -> Result<Vec<Option<Value>>> {
    let dt = g.dtype(ins[0]);
    let parts = outs
        .iter()
        .zip(douts)
        .map(|(&o, d)| match d {
            Some(d) => Ok(*d),
            None => {
                let s = g.shape(o).clone();
                g.fill(0.0, s, dt)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![Some(g.concat(&parts, axis)?)])
}

/// `dy` split along `axis` back into the operands' sizes.
pub fn vjp_concat(
    g: &mut Graph,
    ins: &[Value],
    dy: Value,
    axis: usize,
) -> Result<Vec<Option<Value>>> {
    let sizes: Vec<usize> = ins.iter().map(|&v| g.shape(v).dims()[axis]).collect();
    Ok(g.split(dy, axis, &sizes)?.into_iter().map(Some).collect())
}

/// Products of the dims before `axis` and after it.
pub(crate) fn outer_inner(s: &Shape, axis: usize) -> (usize, usize) {
    let d = s.dims();
    (d[..axis].iter().product(), d[axis + 1..].iter().product())
}

/// One part of a split (or concat) along `axis`, as a GPU kernel copies it:
/// `total` elements in rows of `width`, at `offset` within rows of `row` in the
/// whole tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Elements in the part.
    pub total: usize,
    /// Elements of the part per row: its extent along `axis` times the inner size.
    pub width: usize,
    /// Elements of the whole tensor per row (the whole extent along `axis` times
    /// the inner size).
    pub row: usize,
    /// Where the part starts within each row of the whole, in elements.
    pub offset: usize,
}

/// The slices of `whole` that `parts` occupy along `axis`, in order.
pub fn slices(whole: &Shape, parts: &[&Shape], axis: usize) -> Vec<Slice> {
    let (_, inner) = outer_inner(whole, axis);
    let row = whole.dims()[axis] * inner;
    let mut offset = 0;
    parts
        .iter()
        .map(|p| {
            let width = p.dims()[axis] * inner;
            let s = Slice {
                total: p.numel(),
                width,
                row,
                offset,
            };
            offset += width;
            s
        })
        .collect()
}

/// A transpose of axes `a` and `b` seen as `[outer, A, mid, B, inner]`:
/// (A, mid, B, inner).
pub fn transpose_view(s: &Shape, a: usize, b: usize) -> (usize, usize, usize, usize) {
    let (a, b) = (a.min(b), a.max(b));
    if a == b {
        return (1, 1, 1, s.numel()); // swapping an axis with itself: a copy
    }
    let d = s.dims();
    (
        d[a],
        d[a + 1..b].iter().product(),
        d[b],
        d[b + 1..].iter().product(),
    )
}
