//! Elementwise ops (kernels/elementwise.cu), llm.c style: one thread per
//! element, 256 to a block. A second operand `b [NB]` repeats with period NB
//! over the first's N elements (a bias, positions, a residual).

use crate::backend::cuda::launch::{family_kernels, grid, launch, numel, ptr, Entry, EVERY_DTYPE};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::tensor::DType;

family_kernels! {
    /// kernels/elementwise.cu.
    pub const KERNELS = "elementwise" {
        ADD = "add" for EVERY_DTYPE,
        MUL = "mul" for EVERY_DTYPE,
        SCALE = "scale" for EVERY_DTYPE,
        FILL = "fill" for EVERY_DTYPE,
        ACCUMULATE = "accumulate" for EVERY_DTYPE,
        GELU_FORWARD = "gelu_forward" for EVERY_DTYPE,
        GELU_BACKWARD = "gelu_backward" for EVERY_DTYPE,
        BIAS_GELU_FORWARD = "bias_gelu_forward" for EVERY_DTYPE,
        BIAS_GELU_BACKWARD = "bias_gelu_backward" for EVERY_DTYPE,
    }
}

/// `Op::Add`: ins a [N], b [NB]; outs out [N] = a + b.
pub(crate) fn add_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    broadcast(cx, ADD, dt, ins, outs)
}

/// `Op::Mul`: ins a [N], b [NB]; outs out [N] = a · b.
pub(crate) fn mul_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    broadcast(cx, MUL, dt, ins, outs)
}

fn broadcast(
    cx: &mut CudaBackend,
    entry: Entry,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (a, b, out) = (ins[0], ins[1], outs[0]);
    let n = numel(out);
    let cfg = grid(n as usize, 256);
    launch!(cx, entry, dt, cfg, ptr(a), ptr(b), ptr(out), n, numel(b))
}

/// `Op::Scale`: ins a [N]; outs out [N] = a · factor.
pub(crate) fn scale_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    factor: f64,
) -> Result<()> {
    let (a, out) = (ins[0], outs[0]);
    let n = numel(out);
    let cfg = grid(n as usize, 256);
    launch!(cx, SCALE, dt, cfg, ptr(a), ptr(out), n, factor as f32)
}

/// `Op::Fill`: outs out [N] = value.
pub(crate) fn fill_forward(
    cx: &mut CudaBackend,
    dt: DType,
    outs: &[&TensorRef],
    value: f64,
) -> Result<()> {
    let out = outs[0];
    let n = numel(out);
    launch!(
        cx,
        FILL,
        dt,
        grid(n as usize, 256),
        ptr(out),
        n,
        value as f32
    )
}

/// `Op::Gelu`: ins x [N]; outs out [N] (tanh form).
pub(crate) fn gelu_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (x, out) = (ins[0], outs[0]);
    let n = numel(out);
    launch!(
        cx,
        GELU_FORWARD,
        dt,
        grid(n as usize, 256),
        ptr(x),
        ptr(out),
        n
    )
}

/// `Op::GeluBackward`: ins x [N], dy [N]; outs dx [N].
pub(crate) fn gelu_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (x, dy, dx) = (ins[0], ins[1], outs[0]);
    let n = numel(dx);
    let cfg = grid(n as usize, 256);
    launch!(cx, GELU_BACKWARD, dt, cfg, ptr(x), ptr(dy), ptr(dx), n)
}

/// `Op::BiasGelu`: ins x [N], b [NB]; outs out [N] = gelu(x + b).
pub(crate) fn bias_gelu_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (x, b, out) = (ins[0], ins[1], outs[0]);
    let (n, nb) = (numel(out), numel(b));
    let cfg = grid(n as usize, 256);
    launch!(
        cx,
        BIAS_GELU_FORWARD,
        dt,
        cfg,
        ptr(x),
        ptr(b),
        ptr(out),
        n,
        nb
    )
}

/// `Op::BiasGeluBackward`: ins x [N], b [NB], dy [N]; outs dh [N], the
/// gradient of the pre-activation x + b (recomputed here, never stored).
pub(crate) fn bias_gelu_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let (x, b, dy, dh) = (ins[0], ins[1], ins[2], outs[0]);
    let (n, nb) = (numel(dh), numel(b));
    let cfg = grid(n as usize, 256);
    let (x, b, dy, dh) = (ptr(x), ptr(b), ptr(dy), ptr(dh));
    launch!(cx, BIAS_GELU_BACKWARD, dt, cfg, x, b, dy, dh, n, nb)
}

/// `Backend::accumulate`: dst [N] += src [N], in dst's type.
pub(crate) fn accumulate(cx: &mut CudaBackend, dst: &TensorRef, src: &TensorRef) -> Result<()> {
    let n = numel(dst);
    let cfg = grid(n as usize, 256);
    launch!(cx, ACCUMULATE, dst.dtype, cfg, ptr(dst), ptr(src), n)
}
