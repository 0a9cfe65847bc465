//! The optimizer's kernels, which run outside the graph: AdamW and the sum of
//! squares behind global-norm clipping.

use super::dispatch::{f, groups_1d, u, Bind};
use super::ops::{Aliases, Kernel, Shader};
use super::pipeline::Variant;
use super::{unsupported, WgpuBackend};
use crate::backend::{AdamWQ8Slot, AdamWSlot, AdamWStep, Backend, TensorRef};
use crate::error::Result;
use crate::graph::ops::Op;
use crate::tensor::DType;

const OPTIM: Shader = Shader {
    file: "optim",
    source: include_str!("../../../shaders/optim.wgsl"),
    entries: &["adamw"],
    aliases: Aliases::T,
};

const SUM_SQUARES: Shader = Shader {
    file: "optim_sum_squares",
    source: include_str!("../../../shaders/optim_sum_squares.wgsl"),
    entries: &["main"],
    aliases: Aliases::T,
};

const OPTIM_Q8: Shader = Shader {
    file: "optim_q8",
    source: include_str!("../../../shaders/optim_q8.wgsl"),
    entries: &["adamw_q8"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[OPTIM, SUM_SQUARES, OPTIM_Q8];

const ADAMW: Kernel = OPTIM.kernel("adamw");
const SUM_SQUARES_MAIN: Kernel = SUM_SQUARES.kernel("main");
const ADAMW_Q8: Kernel = OPTIM_Q8.kernel("adamw_q8");

/// Σ x² of each tensor `t [n]` into its f32 slot of `result [ts.len()]`, one
/// workgroup per tensor (deterministic); the host adds the slots.
pub(super) fn sum_squares(b: &mut WgpuBackend, ts: &[&TensorRef]) -> Result<f64> {
    if ts.is_empty() {
        return Ok(0.0);
    }
    for t in ts {
        b.select("sum_squares", &[t])?;
    }
    // A few bytes of scratch outside the allocator: one f32 per tensor.
    let result = b.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("sum of squares"),
        size: 4 * ts.len() as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    for (i, t) in ts.iter().enumerate() {
        b.variant = Variant::T(t.dtype);
        b.dispatch(
            SUM_SQUARES_MAIN,
            &[u(t.shape.numel()), u(i)],
            &[(1, Bind::T(t)), (2, Bind::B(&result))],
            (1, 1, 1),
        )?;
    }
    let bytes = b.read_buffer(&result, 0, 4 * ts.len() as u64)?;
    let parts: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
    Ok(parts.iter().map(|&x| x as f64).sum())
}

/// The parameter words both AdamW shaders read first: p0 n, p1 lr, p2 β1,
/// p3 β2, p4 eps, p5 decay factor, p6/p7 bias corrections, p8 gradient scale.
fn step_words(s: &AdamWStep, n: usize, decay: bool) -> [u32; 9] {
    let (bc1, bc2) = s.bias_corrections();
    [
        u(n),
        f(s.lr),
        f(s.beta1),
        f(s.beta2),
        f(s.eps),
        f(s.decay_factor(decay)),
        f(bc1),
        f(bc2),
        f(s.grad_scale),
    ]
}

/// One AdamW step per slot, in place: `param [n]`, `m [n]`, `v [n]` updated
/// from `grad [n]`, all f32.
pub(super) fn adamw(b: &mut WgpuBackend, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
    for slot in slots {
        for t in [slot.param, slot.grad, slot.m, slot.v] {
            if t.dtype != DType::F32 {
                return Err(unsupported(format!(
                    "{} optimizer tensors (AdamW keeps f32)",
                    t.dtype
                )));
            }
        }
        b.variant = Variant::T(DType::F32);
        let n = slot.param.shape.numel();
        let p = step_words(s, n, slot.decay);
        let binds = [
            (1, Bind::T(slot.grad)),
            (2, Bind::T(slot.param)),
            (3, Bind::T(slot.m)),
            (4, Bind::T(slot.v)),
        ];
        b.dispatch(ADAMW, &p, &binds, groups_1d(n))?;
        if let Some(shadow) = slot.shadow {
            b.run(&Op::Cast { to: shadow.dtype }, &[slot.param], &[shadow])?;
        }
    }
    Ok(())
}

/// One 8-bit AdamW step per slot (see `crate::optim::quant`): one workgroup
/// per block of 2048 elements of `param [n]`, its codes `m`, `v` `[n]` u8
/// and scales `[2 · blocks]` rewritten; `codebook [384]` f32.
pub(super) fn adamw_q8(
    b: &mut WgpuBackend,
    slots: &[AdamWQ8Slot],
    s: &AdamWStep,
    codebook: &TensorRef,
) -> Result<()> {
    for slot in slots {
        slot.check()?;
        b.variant = Variant::T(DType::F32);
        let n = slot.param.shape.numel();
        let nb = crate::optim::quant::blocks(n);
        let mut p = step_words(s, n, slot.decay).to_vec();
        p.push(u(nb));
        let binds = [
            (1, Bind::T(slot.grad)),
            (2, Bind::T(slot.param)),
            (3, Bind::T(slot.m)),
            (4, Bind::T(slot.v)),
            (5, Bind::T(slot.scales)),
            (6, Bind::T(codebook)),
        ];
        let x = nb.clamp(1, 65535);
        b.dispatch(ADAMW_Q8, &p, &binds, (x as u32, nb.div_ceil(x) as u32, 1))?;
        if let Some(shadow) = slot.shadow {
            b.run(&Op::Cast { to: shadow.dtype }, &[slot.param], &[shadow])?;
        }
    }
    Ok(())
}
