//! Rotary position embeddings on the q and k heads of a fused `qkv` row. A
//! rotation's gradient is the opposite rotation, so the vector-Jacobian rule
//! is the op itself with `inverse` flipped.

use super::{attention::AttentionDims, Meta};
use crate::error::{Error, Result};
use crate::tensor::{DType, Shape};

/// `qkv [B, T, (H + 2K)·D]` → the same shape and dtype; `D` must be even.
pub fn infer(ins: &[Meta], n_head: usize, n_kv_head: usize) -> Result<Vec<(Shape, DType)>> {
    let (shape, dt) = ins[0];
    if !dt.is_float() {
        return Err(Error::dtype("rope", "a float", dt));
    }
    let d = AttentionDims::of(shape, n_head, n_kv_head)?;
    if d.head_dim % 2 != 0 {
        return Err(Error::shape(
            "rope",
            format!("heads of {} columns cannot rotate in pairs", d.head_dim),
        ));
    }
    Ok(vec![(shape.clone(), dt)])
}

/// The angle step of column pair `i` of a head of `head_dim` columns:
/// `theta^(−2i/head_dim)`, in f64 (kernels round it to their precision).
pub fn inv_freq(theta: f64, i: usize, head_dim: usize) -> f64 {
    theta.powf(-2.0 * i as f64 / head_dim as f64)
}
