//! RMSNorm over the last dim (Llama's norm: no mean subtracted, no bias),
//! with the reciprocal root mean square saved for backward.

use super::{mixed, same_float, stat_dtype, Meta};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// `x [.., C]`, `w [C]` → `y [.., C]` (in `out`, else `x`'s dtype), `rstd [..]`.
pub fn infer(ins: &[Meta], out: Option<DType>) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("rmsnorm", ins)?;
    let y_dt = out.unwrap_or(dt);
    if y_dt != dt && !mixed(dt, y_dt) {
        return Err(Error::DType {
            op: "rmsnorm",
            detail: format!("{dt} x cannot give {y_dt} y (only f32 x gives f16/bf16 y)"),
        });
    }
    let x = ins[0].0;
    let c = Shape(vec![x.last()]);
    if x.rank() == 0 || ins[1].0 != &c {
        return Err(Error::shape(
            "rmsnorm",
            format!("x {x} needs a weight of shape {c}, got {}", ins[1].0),
        ));
    }
    let rows = Shape(x.dims()[..x.rank() - 1].to_vec());
    Ok(vec![(x.clone(), y_dt), (rows, stat_dtype(dt))])
}

/// `dy, x [.., C]`, `w [C]`, `rstd [..]` → `dx [.., C]`, `dw [C]` in `x`'s
/// dtype; `dy` is `x`'s dtype or, for f32 `x`, f16/bf16.
pub fn infer_backward(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("rmsnorm_backward", &ins[1..3])?;
    let dy = ins[0].1;
    if dy != dt && !mixed(dt, dy) {
        return Err(Error::DType {
            op: "rmsnorm_backward",
            detail: format!("{dy} dy with {dt} x (only f32 x takes f16/bf16 dy)"),
        });
    }
    let x = ins[1].0;
    if ins[0].0 != x {
        return Err(Error::shape("rmsnorm_backward", "dy and x differ in shape"));
    }
    Ok(vec![(x.clone(), dt), (Shape(vec![x.last()]), dt)])
}

/// Records [`Op::RmsNormBackward`] from `dy`, the input, the weight and the
/// saved rstd; gives the gradients of `x` and `w`.
pub fn vjp(g: &mut Graph, ins: &[Value], outs: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let r = g.apply(Op::RmsNormBackward, &[dy, ins[0], ins[1], outs[1]])?;
    Ok(vec![Some(r[0]), Some(r[1])])
}
