//! `Op::Cast` (kernels/cast.cu): one thread per element, rounding to
//! nearest-even on the store. A kernel per pair of storage types,
//! `cast_<from>_<to>`: one entry per source type, instantiated per target.

use crate::backend::cuda::context::unavailable;
use crate::backend::cuda::launch::{family_kernels, grid, Entry, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/cast.cu.
    pub const KERNELS = "cast" {
        FROM_F32 = "cast_f32" for EVERY_DTYPE,
        FROM_F16 = "cast_f16" for EVERY_DTYPE,
        FROM_BF16 = "cast_bf16" for EVERY_DTYPE,
    }
}

/// The kernels reading `from`.
fn from(from: DType) -> Result<Entry> {
    Ok(match from {
        DType::F32 => FROM_F32,
        DType::F16 => FROM_F16,
        DType::BF16 => FROM_BF16,
        other => return Err(unavailable(format!("{other} tensors"))),
    })
}

/// The launch of `Op::Cast { to }` from `from` to `out [N]`: ins x [N] in
/// `from`; outs out [N] in `to`, the storage type the plan is run for (which
/// picks the kernel's target).
pub fn plan_forward(from_dtype: DType, out: &Shape) -> Result<OpPlan> {
    let entry = from(from_dtype)?;
    let n = out.numel() as u64;
    Ok(OpPlan::one(Launch::new(
        entry,
        grid(n as usize, 256),
        args![In(0), Out(0), n],
    )))
}

/// `Op::Cast { to }`: [`plan_forward`], run for `to`.
pub(crate) fn cast_forward(
    cx: &mut CudaBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    to: DType,
) -> Result<()> {
    let plan = plan_forward(ins[0].dtype, &outs[0].shape)?;
    cx.run_plan(to, &plan, ins, outs)
}
