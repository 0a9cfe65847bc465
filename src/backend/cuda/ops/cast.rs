//! `Op::Cast` (kernels/cast.cu): one thread per element, rounding to
//! nearest-even on the store. A kernel per pair of storage types,
//! `cast_<from>_<to>`: one entry per source type, instantiated per target.

use crate::backend::cuda::context::unavailable;
use crate::backend::cuda::launch::{family_kernels, grid, launch, numel, ptr, Entry, EVERY_DTYPE};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::tensor::DType;

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

/// `Op::Cast { to }`: ins x [N] (any storage type); outs out [N] in `to`.
pub(crate) fn cast_forward(
    cx: &mut CudaBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    to: DType,
) -> Result<()> {
    let (x, out) = (ins[0], outs[0]);
    let entry = from(x.dtype)?;
    let n = numel(out);
    launch!(cx, entry, to, grid(n as usize, 256), ptr(x), ptr(out), n)
}
