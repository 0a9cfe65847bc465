//! Dtype casts between float types, rounded to nearest-even.

use super::elementwise::COPY;
use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{groups_1d, u, Bind};
use crate::backend::wgpu::pipeline::Variant;
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::tensor::DType;

const CAST: Shader = Shader {
    file: "cast",
    source: include_str!("../../../../shaders/cast.wgsl"),
    entries: &["main"],
    aliases: Aliases::Cast,
};

pub const SHADERS: &[Shader] = &[CAST];

const MAIN: Kernel = CAST.kernel("main");

/// `x [N]` → `out [N]` in dtype `to`; to the same dtype, a plain copy. The
/// cast kernel is compiled per (from, to) pair: one thread per element.
pub(crate) fn cast_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    to: DType,
) -> Result<()> {
    let (x, out) = (ins[0], outs[0]);
    let n = out.shape.numel();
    let binds = [(1, Bind::T(x)), (3, Bind::T(out))];
    if x.dtype == to {
        gpu.dispatch(COPY, &[u(n)], &binds, groups_1d(n))
    } else {
        gpu.variant = Variant::Cast(x.dtype, to);
        gpu.dispatch(MAIN, &[u(n)], &binds, groups_1d(n))
    }
}
