//! Rotary position embeddings on the q and k heads of `qkv`, the
//! frequencies computed on the host.

use wgpu::util::DeviceExt;

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{f, groups_1d, u, Bind};
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::attention::AttentionDims;
use crate::graph::ops::rope::inv_freq;

const ROPE: Shader = Shader {
    file: "rope",
    source: include_str!("../../../../shaders/rope.wgsl"),
    entries: &["forward"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[ROPE];

const FORWARD: Kernel = ROPE.kernel("forward");

/// `qkv [B, T, (H + 2K)·D]` → `out` of the same shape: one thread per
/// element. The pair frequencies are taken in f64 and rounded once, as the
/// cpu kernel takes them, rather than with WGSL's f32 `pow`, whose error the
/// spec leaves loose; the shader takes only cos and sin.
pub(crate) fn rope_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    (n_head, n_kv_head): (usize, usize),
    theta: f64,
    inverse: bool,
) -> Result<()> {
    let (qkv, out) = (ins[0], outs[0]);
    let d = AttentionDims::of(&qkv.shape, n_head, n_kv_head)?;
    let n = out.shape.numel();
    // Nothing to turn, and an empty frequency buffer could not be bound.
    if n == 0 {
        return Ok(());
    }
    let hd = d.head_dim;
    let freqs: Vec<f32> = (0..hd / 2).map(|i| inv_freq(theta, i, hd) as f32).collect();
    // A few bytes outside the allocator, as the parameter block is; the
    // recorded pass keeps the buffer alive until it has run.
    let freqs = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("rope frequencies"),
            contents: bytemuck::cast_slice(&freqs),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let sign = if inverse { -1.0 } else { 1.0 };
    let p = [u(n), u(d.t), u(d.row()), u(d.v_start()), u(hd), f(sign)];
    gpu.dispatch(
        FORWARD,
        &p,
        &[(1, Bind::T(qkv)), (2, Bind::B(&freqs)), (3, Bind::T(out))],
        groups_1d(n),
    )
}
