//! Elementwise ops (kernels/elementwise.cu), llm.c style: one thread per
//! element, 256 to a block. A second operand `b [NB]` repeats with period NB
//! over the first's N elements (a bias, positions, a residual).

use crate::backend::cuda::launch::{family_kernels, grid, Entry, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Arg, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::tensor::{DType, Shape};

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

/// One launch of `entry`, a thread per element of `out [N]`, 256 to a block.
fn per_element(entry: Entry, out: &Shape, args: Vec<Arg>) -> OpPlan {
    OpPlan::one(Launch::new(entry, grid(out.numel(), 256), args))
}

fn n(s: &Shape) -> u64 {
    s.numel() as u64
}

/// The launch of `Op::Add` to `out [N]`: ins a [N], b [NB]; outs out [N] = a + b.
pub fn plan_add(out: &Shape, b: &Shape) -> OpPlan {
    per_element(ADD, out, args![In(0), In(1), Out(0), n(out), n(b)])
}

/// The launch of `Op::Mul` to `out [N]`: ins a [N], b [NB]; outs out [N] = a · b.
pub fn plan_mul(out: &Shape, b: &Shape) -> OpPlan {
    per_element(MUL, out, args![In(0), In(1), Out(0), n(out), n(b)])
}

/// The launch of `Op::Scale { factor }` to `out [N]`: ins a [N]; outs
/// out [N] = a · factor.
pub fn plan_scale(out: &Shape, factor: f64) -> OpPlan {
    per_element(SCALE, out, args![In(0), Out(0), n(out), factor as f32])
}

/// The launch of `Op::Fill { value }` to `out [N]`: outs out [N] = value.
pub fn plan_fill(out: &Shape, value: f64) -> OpPlan {
    per_element(FILL, out, args![Out(0), n(out), value as f32])
}

/// The launch of `Op::Gelu` to `out [N]`: ins x [N]; outs out [N] (tanh form).
pub fn plan_gelu_forward(out: &Shape) -> OpPlan {
    per_element(GELU_FORWARD, out, args![In(0), Out(0), n(out)])
}

/// The launch of `Op::GeluBackward` to `dx [N]`: ins x [N], dy [N]; outs dx [N].
pub fn plan_gelu_backward(dx: &Shape) -> OpPlan {
    per_element(GELU_BACKWARD, dx, args![In(0), In(1), Out(0), n(dx)])
}

/// The launch of `Op::BiasGelu` to `out [N]`: ins x [N], b [NB]; outs
/// out [N] = gelu(x + b).
pub fn plan_bias_gelu_forward(out: &Shape, b: &Shape) -> OpPlan {
    let args = args![In(0), In(1), Out(0), n(out), n(b)];
    per_element(BIAS_GELU_FORWARD, out, args)
}

/// The launch of `Op::BiasGeluBackward` to `dh [N]`: ins x [N], b [NB],
/// dy [N]; outs dh [N], the gradient of the pre-activation x + b (recomputed
/// here, never stored).
pub fn plan_bias_gelu_backward(dh: &Shape, b: &Shape) -> OpPlan {
    let args = args![In(0), In(1), In(2), Out(0), n(dh), n(b)];
    per_element(BIAS_GELU_BACKWARD, dh, args)
}

/// The launch of `Backend::accumulate` into `dst [N]`: ins src [N]; outs
/// dst [N] += src, in place (dst is read too), in dst's type.
pub fn plan_accumulate(dst: &Shape) -> OpPlan {
    per_element(ACCUMULATE, dst, args![Out(0), In(0), n(dst)])
}

/// `Op::Add`: [`plan_add`].
pub(crate) fn add_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_add(&outs[0].shape, &ins[1].shape), ins, outs)
}

/// `Op::Mul`: [`plan_mul`].
pub(crate) fn mul_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_mul(&outs[0].shape, &ins[1].shape), ins, outs)
}

/// `Op::Scale`: [`plan_scale`].
pub(crate) fn scale_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    factor: f64,
) -> Result<()> {
    cx.run_plan(dt, &plan_scale(&outs[0].shape, factor), ins, outs)
}

/// `Op::Fill`: [`plan_fill`].
pub(crate) fn fill_forward(
    cx: &mut CudaBackend,
    dt: DType,
    outs: &[&TensorRef],
    value: f64,
) -> Result<()> {
    cx.run_plan(dt, &plan_fill(&outs[0].shape, value), &[], outs)
}

/// `Op::Gelu`: [`plan_gelu_forward`].
pub(crate) fn gelu_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_gelu_forward(&outs[0].shape), ins, outs)
}

/// `Op::GeluBackward`: [`plan_gelu_backward`].
pub(crate) fn gelu_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    cx.run_plan(dt, &plan_gelu_backward(&outs[0].shape), ins, outs)
}

/// `Op::BiasGelu`: [`plan_bias_gelu_forward`].
pub(crate) fn bias_gelu_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_bias_gelu_forward(&outs[0].shape, &ins[1].shape);
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::BiasGeluBackward`: [`plan_bias_gelu_backward`].
pub(crate) fn bias_gelu_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_bias_gelu_backward(&outs[0].shape, &ins[1].shape);
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Backend::accumulate`: [`plan_accumulate`].
pub(crate) fn accumulate(cx: &mut CudaBackend, dst: &TensorRef, src: &TensorRef) -> Result<()> {
    cx.run_plan(dst.dtype, &plan_accumulate(&dst.shape), &[src], &[dst])
}
