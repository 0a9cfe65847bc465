//! Dtype casts between float types. Only the shape rule is here: the gradient
//! is a cast back (inline in `route.rs`), and the cpu kernel, a widening load
//! and a round-to-nearest-even store, is
//! [`cast_forward`](crate::backend::cpu::ops::cast::cast_forward).

use super::Meta;
use crate::error::{Error, Result};
use crate::tensor::{DType, Shape};

/// Shape rule of [`Op::Cast`](crate::graph::Op::Cast): the operand's shape in
/// dtype `to`; both dtypes must be floats.
pub fn infer(ins: &[Meta], to: DType) -> Result<Vec<(Shape, DType)>> {
    let (s, from) = ins[0];
    if !from.is_float() || !to.is_float() {
        return Err(Error::DType {
            op: "cast",
            detail: format!("casts go between float dtypes, not {from} → {to}"),
        });
    }
    Ok(vec![(s.clone(), to)])
}
