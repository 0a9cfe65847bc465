//! The optimizer's launches (kernels/optim.cu): Σx² over many tensors and AdamW
//! over every parameter, each in one launch driven by a table of device
//! pointers ([`Buf::Table`], uploaded to a side buffer).

use cudarc::driver::{result as drv, LaunchConfig};

use super::context::{drv_err, unavailable, CudaBackend};
use super::launch::{family_kernels, EVERY_DTYPE};
use super::plan::{args, Buf::*, Field, Launch, OpPlan};
use crate::backend::{AdamWQ8Slot, AdamWSlot, AdamWStep, TensorRef};
use crate::error::{Error, Result};
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/optim.cu.
    pub const KERNELS = "optim" {
        SUM_SQUARES_MULTI = "sum_squares_multi" for EVERY_DTYPE,
        ADAMW_MULTI = "adamw_multi" for &[DType::F32],
        ADAMW_Q8 = "adamw_q8" for &[DType::F32],
    }
}

/// Blocks of `sum_squares_multi` per tensor, each leaving one partial sum.
const SUM_BLOCKS: u64 = 64;

/// A grid of `x` blocks by one row per table entry, 256 threads to a block.
fn table_grid(x: u64, entries: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x as u32, entries as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The launch of Σx² over tensors of one storage type, shaped `shapes`: ins
/// the tensors; the workspace ends as partials [tensors, 64] f32, the sums of
/// each tensor's 64 blocks, for the host to add in order. The table is the
/// kernel's SumSlot per tensor: (address, element count).
pub fn plan_sum_squares(shapes: &[&Shape]) -> Result<OpPlan> {
    if shapes.len() > 65535 {
        return Err(unavailable(format!(
            "{} tensors in one sum-of-squares launch",
            shapes.len()
        )));
    }
    let table = (0..shapes.len())
        .flat_map(|i| [Field::Ptr(In(i)), Field::U64(shapes[i].numel() as u64)])
        .collect();
    let cfg = table_grid(SUM_BLOCKS, shapes.len());
    Ok(OpPlan {
        workspace_bytes: Some(4 * SUM_BLOCKS * shapes.len() as u64),
        launches: vec![
            Launch::new(SUM_SQUARES_MULTI, cfg, args![Table, Workspace]).with_table(table)
        ],
    })
}

/// One parameter of an AdamW launch: its shape, whether weight decay
/// applies, and the dtype of its low-precision copy, if it has one.
#[derive(Clone, Copy, Debug)]
pub struct AdamWParam<'a> {
    /// The parameter's shape.
    pub shape: &'a Shape,
    /// Whether weight decay applies.
    pub decay: bool,
    /// The copy's dtype (f16 or bf16); `None` for no copy.
    pub shadow: Option<DType>,
}

/// The tail both AdamW slot structs share: the copy's address (0 without
/// one, `copy` with), the decay factor and the copy's type (0 none, 1 f16,
/// 2 bf16).
fn copy_fields(
    p: &AdamWParam,
    copy: super::plan::Buf,
    s: &AdamWStep,
    op: &'static str,
) -> Result<[Field; 3]> {
    let (addr, kind) = match p.shadow {
        None => (Field::U64(0), 0),
        Some(DType::F16) => (Field::Ptr(copy), 1),
        Some(DType::BF16) => (Field::Ptr(copy), 2),
        Some(other) => return Err(Error::dtype(op, "an f16 or bf16 copy", other)),
    };
    Ok([
        addr,
        Field::F32(s.decay_factor(p.decay) as f32),
        Field::U32(kind),
    ])
}

/// The launch of one AdamW step `s` over `params`: ins each parameter's
/// gradient; outs each parameter, its m, its v and its copy (`Out(4k)` ..
/// `Out(4k + 3)`; the copy's slot is unused without one), f32 but the copy,
/// all updated in place. The table is the kernel's AdamSlot per parameter:
/// (param, grad, m, v, n, copy, decay factor, copy type); a grid row each.
pub fn plan_adamw(params: &[AdamWParam], s: &AdamWStep) -> Result<OpPlan> {
    if params.len() > 65535 {
        return Err(unavailable(format!(
            "{} parameter tensors in one AdamW launch",
            params.len()
        )));
    }
    let (bc1, bc2) = s.bias_corrections();
    let (bc1, bc2) = (bc1 as f32, bc2 as f32);
    let mut table = Vec::with_capacity(7 * params.len());
    let mut widest = 0u64;
    for (k, p) in params.iter().enumerate() {
        let n = p.shape.numel() as u64;
        widest = widest.max(n);
        let (w, m, v) = (Out(4 * k), Out(4 * k + 1), Out(4 * k + 2));
        table.extend([w, In(k), m, v].map(Field::Ptr));
        table.push(Field::U64(n));
        table.extend(copy_fields(p, Out(4 * k + 3), s, "adamw")?);
    }
    let cfg = table_grid(widest.div_ceil(256).clamp(1, 1024), params.len());
    let (lr, b1, b2, eps) = (s.lr as f32, s.beta1 as f32, s.beta2 as f32, s.eps as f32);
    let args = args![Table, lr, b1, b2, eps, bc1, bc2, s.grad_scale as f32];
    Ok(OpPlan::one(
        Launch::new(ADAMW_MULTI, cfg, args).with_table(table),
    ))
}

/// The launch of one 8-bit AdamW step `s` over `params` (see
/// `crate::optim::quant`): ins each parameter's gradient, then the code book
/// `[384]` f32 (`In(params.len())`); outs each parameter, its m codes, its v
/// codes, its scales and its copy (`Out(5k)` .. `Out(5k + 4)`). The table is
/// the kernel's AdamQ8Slot per parameter; a grid row each, a block per
/// 2048 elements.
pub fn plan_adamw_q8(params: &[AdamWParam], s: &AdamWStep) -> Result<OpPlan> {
    if params.len() > 65535 {
        return Err(unavailable(format!(
            "{} parameter tensors in one 8-bit AdamW launch",
            params.len()
        )));
    }
    let (bc1, bc2) = s.bias_corrections();
    let (bc1, bc2) = (bc1 as f32, bc2 as f32);
    let mut table = Vec::with_capacity(10 * params.len());
    let mut most = 1u64;
    for (k, p) in params.iter().enumerate() {
        let n = p.shape.numel();
        let nb = crate::optim::quant::blocks(n) as u64;
        most = most.max(nb);
        table.extend(
            [
                Out(5 * k),
                In(k),
                Out(5 * k + 1),
                Out(5 * k + 2),
                Out(5 * k + 3),
            ]
            .map(Field::Ptr),
        );
        table.extend([Field::U64(n as u64), Field::U64(nb)]);
        table.extend(copy_fields(p, Out(5 * k + 4), s, "adamw_q8")?);
    }
    let cfg = table_grid(most, params.len());
    let (lr, b1, b2, eps) = (s.lr as f32, s.beta1 as f32, s.beta2 as f32, s.eps as f32);
    let book = In(params.len());
    let args = args![Table, book, lr, b1, b2, eps, bc1, bc2, s.grad_scale as f32];
    Ok(OpPlan::one(
        Launch::new(ADAMW_Q8, cfg, args).with_table(table),
    ))
}

impl CudaBackend {
    /// 8-bit AdamW over all parameters in one launch ([`plan_adamw_q8`]).
    pub(super) fn adamw_q8_multi(
        &mut self,
        slots: &[AdamWQ8Slot],
        s: &AdamWStep,
        codebook: &TensorRef,
    ) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        for slot in slots {
            slot.check()?;
        }
        let params: Vec<AdamWParam> = slots
            .iter()
            .map(|k| AdamWParam {
                shape: &k.param.shape,
                decay: k.decay,
                shadow: k.shadow.map(|t| t.dtype),
            })
            .collect();
        let plan = plan_adamw_q8(&params, s)?;
        let mut ins: Vec<&TensorRef> = slots.iter().map(|k| k.grad).collect();
        ins.push(codebook);
        let outs: Vec<&TensorRef> = slots
            .iter()
            .flat_map(|k| [k.param, k.m, k.v, k.scales, k.shadow.unwrap_or(k.param)])
            .collect();
        self.run_plan(DType::F32, &plan, &ins, &outs)
    }

    /// Σx² over all tensors: one launch per dtype present ([`plan_sum_squares`]),
    /// the partial sums added here in a fixed order.
    pub(super) fn sum_squares_multi(&mut self, ts: &[&TensorRef]) -> Result<f64> {
        if let Some(t) = ts
            .iter()
            .find(|t| !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16))
        {
            return Err(Error::dtype("sum_squares", "f32, f16 or bf16", t.dtype));
        }
        let mut total = 0f64;
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let group: Vec<&TensorRef> = ts.iter().copied().filter(|t| t.dtype == dt).collect();
            if group.is_empty() {
                continue;
            }
            let shapes: Vec<&Shape> = group.iter().map(|t| &t.shape).collect();
            let plan = plan_sum_squares(&shapes)?;
            self.run_plan(dt, &plan, &group, &[])?;
            self.sync()?;
            let parts_len = SUM_BLOCKS as usize * group.len();
            // The workspace the plan ran in: already this large, so not moved.
            let ws = self.workspace(4 * parts_len as u64)?;
            let mut parts = vec![0f32; parts_len];
            // SAFETY: the workspace holds at least parts_len floats.
            unsafe { drv::memcpy_dtoh_sync(&mut parts, ws) }.map_err(|e| drv_err("download", e))?;
            total += parts.iter().map(|&x| x as f64).sum::<f64>();
        }
        Ok(total)
    }

    /// AdamW over all parameters in one launch ([`plan_adamw`]).
    pub(super) fn adamw_multi(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let params: Vec<AdamWParam> = slots
            .iter()
            .map(|k| AdamWParam {
                shape: &k.param.shape,
                decay: k.decay,
                shadow: k.shadow.map(|t| t.dtype),
            })
            .collect();
        let plan = plan_adamw(&params, s)?;
        for slot in slots {
            slot.check_f32()?;
        }
        let grads: Vec<&TensorRef> = slots.iter().map(|k| k.grad).collect();
        // A parameter without a copy names its weights again in the copy's
        // slot; the table never points at it.
        let outs: Vec<&TensorRef> = slots
            .iter()
            .flat_map(|k| [k.param, k.m, k.v, k.shadow.unwrap_or(k.param)])
            .collect();
        self.run_plan(DType::F32, &plan, &grads, &outs)
    }
}
