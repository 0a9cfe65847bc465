//! Dtype casts between float types. The cpu kernel is a widening load and a
//! round-to-nearest-even store, so it lives with the storage conversions in
//! `tensor`; only the shape rule is here.

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
