//! LayerNorm over the last dim, with the mean and reciprocal std saved for backward.

use super::{mixed, same_float, stat_dtype, Meta};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// `x [.., C]`, `w [C]`, `b [C]` → `y [.., C]` (in `out`, else `x`'s dtype),
/// `mean [..]`, `rstd [..]`.
pub fn infer(ins: &[Meta], out: Option<DType>) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("layernorm", ins)?;
    let y_dt = out.unwrap_or(dt);
    if y_dt != dt && !mixed(dt, y_dt) {
        return Err(Error::DType {
            op: "layernorm",
            detail: format!("{dt} x cannot give {y_dt} y (only f32 x gives f16/bf16 y)"),
        });
    }
    let x = ins[0].0;
    let c = Shape(vec![x.last()]);
    if x.rank() == 0 || ins[1].0 != &c || ins[2].0 != &c {
        return Err(Error::shape(
            "layernorm",
            format!(
                "x {x} needs weight and bias of shape {c}, got {} and {}",
                ins[1].0, ins[2].0
            ),
        ));
    }
    let rows = Shape(x.dims()[..x.rank() - 1].to_vec());
    Ok(vec![
        (x.clone(), y_dt),
        (rows.clone(), stat_dtype(dt)),
        (rows, stat_dtype(dt)),
    ])
}

/// `dy, x [.., C]`, `w [C]`, `mean, rstd [..]` → `dx [.., C]`, `dw [C]`, `db [C]`
/// in `x`'s dtype; `dy` is `x`'s dtype or, for f32 `x`, f16/bf16 (the forward
/// wrote a low-precision `y`).
pub fn infer_backward(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("layernorm_backward", &ins[1..3])?;
    let dy = ins[0].1;
    if dy != dt && !mixed(dt, dy) {
        return Err(Error::DType {
            op: "layernorm_backward",
            detail: format!("{dy} dy with {dt} x (only f32 x takes f16/bf16 dy)"),
        });
    }
    let x = ins[1].0;
    if ins[0].0 != x {
        return Err(Error::shape(
            "layernorm_backward",
            "dy and x differ in shape",
        ));
    }
    let c = Shape(vec![x.last()]);
    Ok(vec![(x.clone(), dt), (c.clone(), dt), (c, dt)])
}

/// Records [`Op::LayerNormBackward`] from `dy`, the input, the weight and the
/// saved mean and rstd; gives the gradients of `x`, `w` and `b`.
pub fn vjp(g: &mut Graph, ins: &[Value], outs: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let r = g.apply(
        Op::LayerNormBackward,
        &[dy, ins[0], ins[1], outs[1], outs[2]],
    )?;
    Ok(vec![Some(r[0]), Some(r[1]), Some(r[2])])
}
