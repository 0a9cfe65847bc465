//! `Op::Rope` (kernels/rope.cu): the q and k heads of each `qkv` row turned
//! by their position's angles, v copied, in one launch of a thread per
//! rotated pair or copied value element. It is its own gradient (`inverse`
//! flipped), so there is no backward kernel.

use crate::backend::cuda::launch::{family_kernels, grid, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::graph::ops::attention::AttentionDims;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/rope.cu.
    pub const KERNELS = "rope" {
        ROPE = "rope" for EVERY_DTYPE,
    }
}

/// The launch of `Op::Rope` on `qkv [B, T, (H + 2K)·D]`: ins qkv; outs
/// out [B, T, (H + 2K)·D]. Each of the B·T rows is (H + K)·D/2 pairs to turn
/// and K·D value columns to copy, a thread each.
pub fn plan_forward(
    qkv: &Shape,
    n_head: usize,
    n_kv_head: usize,
    theta: f64,
    inverse: bool,
) -> Result<OpPlan> {
    let a = AttentionDims::of(qkv, n_head, n_kv_head)?;
    if a.head_dim % 2 != 0 {
        return Err(Error::shape(
            "rope",
            "heads of an odd size cannot turn in pairs",
        ));
    }
    let pairs = (a.n_head + a.n_kv_head) * a.head_dim / 2;
    let vcols = a.n_kv_head * a.head_dim;
    let n = a.b * a.t * (pairs + vcols);
    let sign: f32 = if inverse { -1.0 } else { 1.0 };
    let args = args![
        In(0),
        Out(0),
        n as u64,
        a.t as u64,
        a.head_dim as u64,
        pairs as u64,
        vcols as u64,
        theta as f32,
        sign
    ];
    Ok(OpPlan::one(Launch::new(ROPE, grid(n, 256), args)))
}

/// `Op::Rope`: [`plan_forward`].
pub(crate) fn rope_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    (n_head, n_kv_head): (usize, usize),
    theta: f64,
    inverse: bool,
) -> Result<()> {
    let plan = plan_forward(&ins[0].shape, n_head, n_kv_head, theta, inverse)?;
    cx.run_plan(dt, &plan, ins, outs)
}
