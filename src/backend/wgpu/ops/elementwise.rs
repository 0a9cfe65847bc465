//! Elementwise ops: broadcast add and mul, scale, GELU and the fused bias +
//! GELU, SiLU, fill, and the copy and accumulate the host asks for. Broadcast
//! operands repeat with their length as the period (their shape is a suffix of
//! the output's). One thread per output element throughout.

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{f, groups_1d, u, Bind};
use crate::backend::wgpu::pipeline::Variant;
use crate::backend::wgpu::WgpuBackend;
use crate::backend::TensorRef;
use crate::error::Result;

const ELEMENTWISE: Shader = Shader {
    file: "elementwise",
    source: include_str!("../../../../shaders/elementwise.wgsl"),
    entries: &[
        "add",
        "mul",
        "scale",
        "copy",
        "fill",
        "accumulate",
        "gelu",
        "gelu_backward",
        "bias_gelu",
        "bias_gelu_backward",
        "silu",
        "silu_backward",
    ],
    aliases: Aliases::T,
};

/// The residual add under autocast: f32 a and out, f16/bf16 b, compiled per
/// (b, out) pair.
const ELEMENTWISE_MIXED: Shader = Shader {
    file: "elementwise_mixed",
    source: include_str!("../../../../shaders/elementwise_mixed.wgsl"),
    entries: &["add"],
    aliases: Aliases::Cast,
};

pub const SHADERS: &[Shader] = &[ELEMENTWISE, ELEMENTWISE_MIXED];

const ADD_MIXED: Kernel = ELEMENTWISE_MIXED.kernel("add");

const ADD: Kernel = ELEMENTWISE.kernel("add");
const MUL: Kernel = ELEMENTWISE.kernel("mul");
const SCALE: Kernel = ELEMENTWISE.kernel("scale");
/// Also the cast to a tensor's own dtype.
pub(super) const COPY: Kernel = ELEMENTWISE.kernel("copy");
const FILL: Kernel = ELEMENTWISE.kernel("fill");
const ACCUMULATE: Kernel = ELEMENTWISE.kernel("accumulate");
const GELU: Kernel = ELEMENTWISE.kernel("gelu");
const GELU_BACKWARD: Kernel = ELEMENTWISE.kernel("gelu_backward");
const BIAS_GELU: Kernel = ELEMENTWISE.kernel("bias_gelu");
const BIAS_GELU_BACKWARD: Kernel = ELEMENTWISE.kernel("bias_gelu_backward");
const SILU: Kernel = ELEMENTWISE.kernel("silu");
const SILU_BACKWARD: Kernel = ELEMENTWISE.kernel("silu_backward");

/// `a [N]`, `b [Nb]` (broadcast) → `out [N]` by kernel `k`.
fn broadcast(
    gpu: &mut WgpuBackend,
    k: Kernel,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (a, b, out) = (ins[0], ins[1], outs[0]);
    let n = out.shape.numel();
    gpu.dispatch(
        k,
        &[u(n), u(b.shape.numel())],
        &[(1, Bind::T(a)), (2, Bind::T(b)), (3, Bind::T(out))],
        groups_1d(n),
    )
}

/// `a [N]`, `b [Nb]` → `out [N] = a + b`; f32 `a` with f16/bf16 `b`: the
/// mixed shader.
pub(crate) fn add_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    if ins[0].dtype != ins[1].dtype {
        gpu.variant = Variant::Cast(ins[1].dtype, ins[0].dtype);
        return broadcast(gpu, ADD_MIXED, ins, outs);
    }
    broadcast(gpu, ADD, ins, outs)
}

/// `a [N]`, `b [Nb]` → `out [N] = a · b`.
pub(crate) fn mul_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    broadcast(gpu, MUL, ins, outs)
}

/// `x [N]`, `b [Nb]` → `out [N] = gelu(x + b)`, the MLP's bias and activation.
pub(crate) fn bias_gelu_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    broadcast(gpu, BIAS_GELU, ins, outs)
}

/// `x [N]`, `b [Nb]`, `dy [N]` → `dh [N] = gelu'(x + b) · dy`, the
/// pre-activation recomputed rather than stored.
pub(crate) fn bias_gelu_backward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (x, b, dy, dh) = (ins[0], ins[1], ins[2], outs[0]);
    let n = dh.shape.numel();
    let binds = [
        (1, Bind::T(x)),
        (2, Bind::T(b)),
        (4, Bind::T(dy)),
        (3, Bind::T(dh)),
    ];
    gpu.dispatch(
        BIAS_GELU_BACKWARD,
        &[u(n), u(b.shape.numel())],
        &binds,
        groups_1d(n),
    )
}

/// `x [N]` → `out [N] = x · factor`.
pub(crate) fn scale_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    factor: f64,
) -> Result<()> {
    let (x, out) = (ins[0], outs[0]);
    let n = out.shape.numel();
    gpu.dispatch(
        SCALE,
        &[u(n), 0, f(factor)],
        &[(1, Bind::T(x)), (3, Bind::T(out))],
        groups_1d(n),
    )
}

/// An activation: GELU (tanh form) or SiLU, by [`Op`](crate::graph::ops::Op).
#[derive(Clone, Copy)]
pub(crate) enum Activation {
    Gelu,
    Silu,
}

/// `x [N]` → `out [N] = act(x)`.
pub(crate) fn activation_forward(
    gpu: &mut WgpuBackend,
    act: Activation,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let kernel = match act {
        Activation::Gelu => GELU,
        Activation::Silu => SILU,
    };
    let (x, out) = (ins[0], outs[0]);
    let n = out.shape.numel();
    gpu.dispatch(
        kernel,
        &[u(n)],
        &[(1, Bind::T(x)), (3, Bind::T(out))],
        groups_1d(n),
    )
}

/// `x [N]`, `dy [N]` → `dx [N] = act'(x) · dy`.
pub(crate) fn activation_backward(
    gpu: &mut WgpuBackend,
    act: Activation,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let kernel = match act {
        Activation::Gelu => GELU_BACKWARD,
        Activation::Silu => SILU_BACKWARD,
    };
    let (x, dy, dx) = (ins[0], ins[1], outs[0]);
    let n = dx.shape.numel();
    gpu.dispatch(
        kernel,
        &[u(n)],
        &[(1, Bind::T(x)), (2, Bind::T(dy)), (3, Bind::T(dx))],
        groups_1d(n),
    )
}

/// No operands → `out [N]`, every element `value`.
pub(crate) fn fill_forward(gpu: &mut WgpuBackend, outs: &[&TensorRef], value: f64) -> Result<()> {
    let out = outs[0];
    let n = out.shape.numel();
    gpu.dispatch(
        FILL,
        &[u(n), 0, f(value)],
        &[(3, Bind::T(out))],
        groups_1d(n),
    )
}

/// `dst [N] += src [N]`, gradient accumulation across micro-batches.
pub(crate) fn accumulate(gpu: &mut WgpuBackend, dst: &TensorRef, src: &TensorRef) -> Result<()> {
    let n = dst.shape.numel();
    gpu.dispatch(
        ACCUMULATE,
        &[u(n)],
        &[(1, Bind::T(src)), (3, Bind::T(dst))],
        groups_1d(n),
    )
}
