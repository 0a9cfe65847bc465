//! Softmax over the last dim.

use crate::error::Result;
use crate::graph::{Graph, Op, Value};

/// Records [`Op::SoftmaxBackward`] from the saved output `y` and `dy`.
pub fn vjp(g: &mut Graph, outs: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    Ok(vec![Some(g.apply(Op::SoftmaxBackward, &[outs[0], dy])?[0])])
}
