//! Softmax over the last dim.

use crate::error::Result;
use crate::graph::{Graph, Op, Value};
use crate::tensor::Shape;

/// A row-wise op's sizes (softmax, layernorm, cross-entropy): `x [.., cols]`
/// seen as `[rows, cols]`, every dim but the last folded into `rows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowDims {
    /// Rows: the product of every dim but the last.
    pub rows: usize,
    /// Columns: the last dim (C, or V for logits).
    pub cols: usize,
}

impl RowDims {
    /// Of `x [.., cols]`.
    pub fn of(x: &Shape) -> RowDims {
        RowDims {
            rows: x.rows(),
            cols: x.last(),
        }
    }
}

/// Records [`Op::SoftmaxBackward`] from the saved output `y` and `dy`.
pub fn vjp(g: &mut Graph, outs: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    Ok(vec![Some(g.apply(Op::SoftmaxBackward, &[outs[0], dy])?[0])])
}
