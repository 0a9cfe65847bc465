//! Elementwise ops (kernels/elementwise.cu). A second operand `b [NB]`
//! repeats with period NB over the first's N elements (a bias, positions, a
//! residual). When N + 16 < 2³² and every operand is 16-byte aligned
//! ([`Fit`]), the `_vec` kernels: a thread per 16 bytes (8 f16/bf16 or 4 f32),
//! 32-bit indices, a scalar tail. Otherwise one thread per element, 64-bit
//! indices. 256 threads a block either way.
//!
//! The residual add under autocast is mixed: f32 a and out, f16/bf16 b (the
//! `add_mixed` entries, named by b's dtype, vectorised as f32's: 4 a thread).

use crate::backend::cuda::launch::{family_kernels, grid, ptr, Entry, EVERY_DTYPE};
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
        SILU_FORWARD = "silu_forward" for EVERY_DTYPE,
        SILU_BACKWARD = "silu_backward" for EVERY_DTYPE,
        ADD_VEC = "add_vec" for EVERY_DTYPE,
        MUL_VEC = "mul_vec" for EVERY_DTYPE,
        SCALE_VEC = "scale_vec" for EVERY_DTYPE,
        FILL_VEC = "fill_vec" for EVERY_DTYPE,
        ACCUMULATE_VEC = "accumulate_vec" for EVERY_DTYPE,
        GELU_FORWARD_VEC = "gelu_forward_vec" for EVERY_DTYPE,
        GELU_BACKWARD_VEC = "gelu_backward_vec" for EVERY_DTYPE,
        BIAS_GELU_FORWARD_VEC = "bias_gelu_forward_vec" for EVERY_DTYPE,
        BIAS_GELU_BACKWARD_VEC = "bias_gelu_backward_vec" for EVERY_DTYPE,
        SILU_FORWARD_VEC = "silu_forward_vec" for EVERY_DTYPE,
        SILU_BACKWARD_VEC = "silu_backward_vec" for EVERY_DTYPE,
        ADD_MIXED = "add_mixed" for LOW_DTYPES,
        ADD_MIXED_VEC = "add_mixed_vec" for LOW_DTYPES,
    }
}

/// The low dtypes alone: the mixed kernels (f32 tensors with f16/bf16 ones)
/// are instantiated for these and named by them.
pub(crate) const LOW_DTYPES: &[DType] = &[DType::F16, DType::BF16];

/// Whether every tensor's address is a multiple of 16 bytes. Allocator blocks
/// start on 512-byte boundaries, so a whole tensor always is; a view at an
/// element offset may not be.
pub(crate) fn aligned16(ts: &[&[&TensorRef]]) -> bool {
    ts.iter().flat_map(|s| s.iter()).all(|t| ptr(t) % 16 == 0)
}

/// What an elementwise launch is planned for: its storage type and whether
/// every operand's address is a multiple of 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    /// The storage type of the op's tensors.
    pub dtype: DType,
    /// Every operand's address is a multiple of 16 bytes.
    pub aligned: bool,
}

impl Fit {
    /// The vectorised kernels' width in elements, if they can take `n`.
    fn width(self, n: u64) -> Option<u64> {
        let w = 16 / self.dtype.size_in_bytes() as u64;
        (self.aligned && n + 16 < 1 << 32).then_some(w)
    }
}

/// `vec` over ⌈N / W⌉ threads with 32-bit sizes when `fit` allows, else `plain`
/// a thread per element; `args` takes the sizes (as u32 for `vec`).
fn plan(
    fit: Fit,
    out: &Shape,
    (vec, plain): (Entry, Entry),
    args: impl Fn(bool) -> Vec<Arg>,
) -> OpPlan {
    let n = out.numel();
    match fit.width(n as u64) {
        Some(w) => OpPlan::one(Launch::new(
            vec,
            grid(n.div_ceil(w as usize), 256),
            args(true),
        )),
        None => OpPlan::one(Launch::new(plain, grid(n, 256), args(false))),
    }
}

/// A size argument: u32 for a `_vec` kernel (which the plan checked it fits).
fn size(x: usize, short: bool) -> Arg {
    if short {
        Arg::U32(x as u32)
    } else {
        Arg::U64(x as u64)
    }
}

/// The launch of `Op::Add` to `out [N]`: ins a [N], b [NB]; outs out [N] = a + b.
pub fn plan_add(out: &Shape, b: &Shape, fit: Fit) -> OpPlan {
    let (n, nb) = (out.numel(), b.numel());
    plan(fit, out, (ADD_VEC, ADD), |s| {
        args![In(0), In(1), Out(0), size(n, s), size(nb, s)]
    })
}

/// The launch of the mixed `Op::Add` to `out [N]`: ins a [N] f32, b [NB] of
/// the low dtype `fit` names; outs out [N] = a + b, f32.
pub fn plan_add_mixed(out: &Shape, b: &Shape, fit: Fit) -> OpPlan {
    let (n, nb) = (out.numel(), b.numel());
    let wide = Fit {
        dtype: DType::F32,
        ..fit
    };
    plan(wide, out, (ADD_MIXED_VEC, ADD_MIXED), |s| {
        args![In(0), In(1), Out(0), size(n, s), size(nb, s)]
    })
}

/// The plan of `Op::Add` on a and b of dtypes `(a, b)`: mixed where they
/// differ.
pub fn plan_add_for(out: &Shape, b: &Shape, (a_dt, b_dt): (DType, DType), fit: Fit) -> OpPlan {
    if a_dt != b_dt {
        plan_add_mixed(out, b, fit)
    } else {
        plan_add(out, b, fit)
    }
}

/// The launch of `Op::Mul` to `out [N]`: ins a [N], b [NB]; outs out [N] = a · b.
pub fn plan_mul(out: &Shape, b: &Shape, fit: Fit) -> OpPlan {
    let (n, nb) = (out.numel(), b.numel());
    plan(fit, out, (MUL_VEC, MUL), |s| {
        args![In(0), In(1), Out(0), size(n, s), size(nb, s)]
    })
}

/// The launch of `Op::Scale { factor }` to `out [N]`: ins a [N]; outs
/// out [N] = a · factor.
pub fn plan_scale(out: &Shape, factor: f64, fit: Fit) -> OpPlan {
    let n = out.numel();
    plan(fit, out, (SCALE_VEC, SCALE), |s| {
        args![In(0), Out(0), size(n, s), factor as f32]
    })
}

/// The launch of `Op::Fill { value }` to `out [N]`: outs out [N] = value.
pub fn plan_fill(out: &Shape, value: f64, fit: Fit) -> OpPlan {
    let n = out.numel();
    plan(fit, out, (FILL_VEC, FILL), |s| {
        args![Out(0), size(n, s), value as f32]
    })
}

/// The launch of `Op::Gelu` to `out [N]`: ins x [N]; outs out [N] (tanh form).
pub fn plan_gelu_forward(out: &Shape, fit: Fit) -> OpPlan {
    let n = out.numel();
    plan(fit, out, (GELU_FORWARD_VEC, GELU_FORWARD), |s| {
        args![In(0), Out(0), size(n, s)]
    })
}

/// The launch of `Op::GeluBackward` to `dx [N]`: ins x [N], dy [N]; outs dx [N].
pub fn plan_gelu_backward(dx: &Shape, fit: Fit) -> OpPlan {
    let n = dx.numel();
    plan(fit, dx, (GELU_BACKWARD_VEC, GELU_BACKWARD), |s| {
        args![In(0), In(1), Out(0), size(n, s)]
    })
}

/// The launch of `Op::Silu` to `out [N]`: ins x [N]; outs out [N] = x·σ(x).
pub fn plan_silu_forward(out: &Shape, fit: Fit) -> OpPlan {
    let n = out.numel();
    plan(fit, out, (SILU_FORWARD_VEC, SILU_FORWARD), |s| {
        args![In(0), Out(0), size(n, s)]
    })
}

/// The launch of `Op::SiluBackward` to `dx [N]`: ins x [N], dy [N]; outs dx [N].
pub fn plan_silu_backward(dx: &Shape, fit: Fit) -> OpPlan {
    let n = dx.numel();
    plan(fit, dx, (SILU_BACKWARD_VEC, SILU_BACKWARD), |s| {
        args![In(0), In(1), Out(0), size(n, s)]
    })
}

/// The launch of `Op::BiasGelu` to `out [N]`: ins x [N], b [NB]; outs
/// out [N] = gelu(x + b).
pub fn plan_bias_gelu_forward(out: &Shape, b: &Shape, fit: Fit) -> OpPlan {
    let (n, nb) = (out.numel(), b.numel());
    plan(fit, out, (BIAS_GELU_FORWARD_VEC, BIAS_GELU_FORWARD), |s| {
        args![In(0), In(1), Out(0), size(n, s), size(nb, s)]
    })
}

/// The launch of `Op::BiasGeluBackward` to `dh [N]`: ins x [N], b [NB],
/// dy [N]; outs dh [N], the gradient of the pre-activation x + b (recomputed
/// here, never stored).
pub fn plan_bias_gelu_backward(dh: &Shape, b: &Shape, fit: Fit) -> OpPlan {
    let (n, nb) = (dh.numel(), b.numel());
    plan(fit, dh, (BIAS_GELU_BACKWARD_VEC, BIAS_GELU_BACKWARD), |s| {
        args![In(0), In(1), In(2), Out(0), size(n, s), size(nb, s)]
    })
}

/// The launch of `Backend::accumulate` into `dst [N]`: ins src [N]; outs
/// dst [N] += src, in place (dst is read too), in dst's type.
pub fn plan_accumulate(dst: &Shape, fit: Fit) -> OpPlan {
    let n = dst.numel();
    plan(fit, dst, (ACCUMULATE_VEC, ACCUMULATE), |s| {
        args![Out(0), In(0), size(n, s)]
    })
}

/// The fit of an op on these tensors.
fn fit(dt: DType, ins: &[&TensorRef], outs: &[&TensorRef]) -> Fit {
    Fit {
        dtype: dt,
        aligned: aligned16(&[ins, outs]),
    }
}

/// `Op::Add`: [`plan_add_for`].
pub(crate) fn add_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let dts = (ins[0].dtype, ins[1].dtype);
    let plan = plan_add_for(&outs[0].shape, &ins[1].shape, dts, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::Mul`: [`plan_mul`].
pub(crate) fn mul_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_mul(&outs[0].shape, &ins[1].shape, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::Scale`: [`plan_scale`].
pub(crate) fn scale_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    factor: f64,
) -> Result<()> {
    let plan = plan_scale(&outs[0].shape, factor, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::Fill`: [`plan_fill`].
pub(crate) fn fill_forward(
    cx: &mut CudaBackend,
    dt: DType,
    outs: &[&TensorRef],
    value: f64,
) -> Result<()> {
    let plan = plan_fill(&outs[0].shape, value, fit(dt, &[], outs));
    cx.run_plan(dt, &plan, &[], outs)
}

/// `Op::Gelu`: [`plan_gelu_forward`].
pub(crate) fn gelu_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_gelu_forward(&outs[0].shape, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::GeluBackward`: [`plan_gelu_backward`].
pub(crate) fn gelu_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_gelu_backward(&outs[0].shape, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::Silu`: [`plan_silu_forward`].
pub(crate) fn silu_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_silu_forward(&outs[0].shape, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::SiluBackward`: [`plan_silu_backward`].
pub(crate) fn silu_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_silu_backward(&outs[0].shape, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::BiasGelu`: [`plan_bias_gelu_forward`].
pub(crate) fn bias_gelu_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_bias_gelu_forward(&outs[0].shape, &ins[1].shape, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::BiasGeluBackward`: [`plan_bias_gelu_backward`].
pub(crate) fn bias_gelu_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_bias_gelu_backward(&outs[0].shape, &ins[1].shape, fit(dt, ins, outs));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Backend::accumulate`: [`plan_accumulate`].
pub(crate) fn accumulate(cx: &mut CudaBackend, dst: &TensorRef, src: &TensorRef) -> Result<()> {
    let plan = plan_accumulate(&dst.shape, fit(dst.dtype, &[src], &[dst]));
    cx.run_plan(dst.dtype, &plan, &[src], &[dst])
}
