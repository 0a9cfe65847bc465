//! Causal self-attention, flash-style (kernels/attention.cu on CUDA cores,
//! kernels/attention_fa.cu on tensor cores): the T×T matrix never exists; the
//! forward keeps each row's log-sum-exp, the backward recomputes probabilities
//! from it. Grouped-query attention on both paths: `qkv [B, T, (H + 2K)·D]`,
//! query head h reading key/value head h / (H/K) in place; the dk/dv kernels
//! run a block per key/value head, which adds its group's query heads in
//! order, so dk and dv have one writer each and no atomics.

use cudarc::driver::LaunchConfig;

use crate::backend::cuda::context::unavailable;
use crate::backend::cuda::launch::{family_kernels, grid, ptr, Entry, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::attention::AttentionDims;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/attention.cu: CUDA cores, any storage type.
    pub const KERNELS = "attention" {
        FORWARD = "attention_forward" for EVERY_DTYPE,
        BACKWARD_DELTA = "attention_backward_delta" for EVERY_DTYPE,
        BACKWARD_DQ = "attention_backward_dq" for EVERY_DTYPE,
        BACKWARD_DKDV = "attention_backward_dkdv" for EVERY_DTYPE,
    }
}

const LOW: &[DType] = &[DType::F16, DType::BF16];

family_kernels! {
    /// kernels/attention_fa.cu: tensor cores (mma.sync), f16 and bf16, one
    /// set of kernels per head size.
    pub const FA_KERNELS = "attention_fa" {
        FA16_FORWARD = "attention_fa_forward_hd16" for LOW,
        FA16_DQ = "attention_fa_backward_dq_hd16" for LOW,
        FA16_DKDV = "attention_fa_backward_dkdv_hd16" for LOW,
        FA32_FORWARD = "attention_fa_forward_hd32" for LOW,
        FA32_DQ = "attention_fa_backward_dq_hd32" for LOW,
        FA32_DKDV = "attention_fa_backward_dkdv_hd32" for LOW,
        FA48_FORWARD = "attention_fa_forward_hd48" for LOW,
        FA48_DQ = "attention_fa_backward_dq_hd48" for LOW,
        FA48_DKDV = "attention_fa_backward_dkdv_hd48" for LOW,
        FA64_FORWARD = "attention_fa_forward_hd64" for LOW,
        FA64_DQ = "attention_fa_backward_dq_hd64" for LOW,
        FA64_DKDV = "attention_fa_backward_dkdv_hd64" for LOW,
        FA128_FORWARD = "attention_fa_forward_hd128" for LOW,
        FA128_DQ = "attention_fa_backward_dq_hd128" for LOW,
        FA128_DKDV = "attention_fa_backward_dkdv_hd128" for LOW,
    }
}

/// attention_fa.cu's kernels for one head size: (forward, dq with delta, dk/dv).
fn fa_entries(hd: usize) -> Option<(Entry, Entry, Entry)> {
    Some(match hd {
        16 => (FA16_FORWARD, FA16_DQ, FA16_DKDV),
        32 => (FA32_FORWARD, FA32_DQ, FA32_DKDV),
        48 => (FA48_FORWARD, FA48_DQ, FA48_DKDV),
        64 => (FA64_FORWARD, FA64_DQ, FA64_DKDV),
        128 => (FA128_FORWARD, FA128_DQ, FA128_DKDV),
        _ => return None,
    })
}

/// Whether attention of head size `hd` in `dtype` runs on tensor cores
/// (kernels/attention_fa.cu): f16/bf16, an instantiated head size, sm_80 or
/// later. HEADROOM_ATTENTION=cuda-cores forces attention.cu, to compare the
/// two on a GPU.
fn tensor_core_attention(cx: &CudaBackend, dtype: DType, hd: usize) -> bool {
    let forced_off = std::env::var("HEADROOM_ATTENTION").is_ok_and(|v| v == "cuda-cores");
    !forced_off && !cx.tc_attention_broken && cx.sm() >= 80 && tensor_core_dims(dtype, hd)
}

/// The dtypes and head sizes attention_fa.cu is instantiated for.
fn tensor_core_dims(dtype: DType, hd: usize) -> bool {
    matches!(dtype, DType::F16 | DType::BF16) && fa_entries(hd).is_some()
}

/// Whether attention over `qkv` with `n_head` query and `n_kv_head`
/// key/value heads in `dtype` can take the tensor-core kernels on an sm_80+
/// GPU (alignment aside).
pub fn tensor_core_shape(
    dtype: DType,
    qkv: &Shape,
    n_head: usize,
    n_kv_head: usize,
) -> Result<bool> {
    Ok(tensor_core_dims(
        dtype,
        AttentionDims::of(qkv, n_head, n_kv_head)?.head_dim,
    ))
}

/// One block of `threads` per 64 rows of one (batch, head) over `heads`
/// heads (query heads, or key/value heads for dk/dv), both paths.
fn tiles(a: &AttentionDims, heads: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (a.t.div_ceil(64) as u32, heads as u32, a.b as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The CUDA-core kernels' limit on the head size.
fn check_cuda_cores(a: &AttentionDims) -> Result<()> {
    let hd = a.head_dim;
    if hd > 128 || hd % 4 != 0 {
        return Err(unavailable(format!(
            "attention head size {hd} (a multiple of 4, at most 128)"
        )));
    }
    Ok(())
}

/// attention_fa.cu's kernels for `a`: its head size instantiated, and T small
/// enough for the kernels' 32-bit row indices.
fn fa_for(a: &AttentionDims) -> Result<(Entry, Entry, Entry)> {
    let hd = a.head_dim;
    let e = fa_entries(hd).ok_or_else(|| {
        unavailable(format!(
            "tensor-core attention of head size {hd} (16, 32, 48, 64 or 128)"
        ))
    })?;
    if a.t >= 1 << 31 {
        return Err(unavailable(format!("tensor-core attention of T = {}", a.t)));
    }
    Ok(e)
}

/// `(T, C, H, K)` as the kernels take them.
fn tchk(a: &AttentionDims) -> (u64, u64, u64, u64) {
    (a.t as u64, a.c as u64, a.n_head as u64, a.n_kv_head as u64)
}

/// The launches of `Op::Attention { n_head, n_kv_head }` on
/// `qkv [B, T, (H + 2K)·D]`, on tensor cores or not: ins qkv; outs
/// out [B, T, H·D], lse [B, H, T] f32. A block per 64 query rows of one
/// (batch, query head).
pub fn plan_forward(
    qkv: &Shape,
    n_head: usize,
    n_kv_head: usize,
    tensor_cores: bool,
) -> Result<OpPlan> {
    let a = AttentionDims::of(qkv, n_head, n_kv_head)?;
    let (t, c, nh, nkv) = tchk(&a);
    let args = args![In(0), Out(0), Out(1), t, c, nh, nkv, a.scale_f32()];
    let (entry, threads) = if tensor_cores {
        (fa_for(&a)?.0, 128)
    } else {
        check_cuda_cores(&a)?;
        (FORWARD, 256)
    };
    Ok(OpPlan::one(Launch::new(
        entry,
        tiles(&a, a.n_head, threads),
        args,
    )))
}

/// The launches of `Op::AttentionBackward { n_head, n_kv_head }`: ins
/// qkv [B, T, (H + 2K)·D], out [B, T, H·D], lse [B, H, T] f32,
/// dout [B, T, H·D]; outs dqkv [B, T, (H + 2K)·D]. delta = Σ dout·out per row
/// goes to the workspace ([B, H, T] f32) first; dq (a block per query head's
/// 64 rows) and dk/dv (a block per key/value head's 64 rows, its group's query
/// heads in order) then write disjoint columns of dqkv, in two kernels so that
/// nothing needs atomics. On tensor cores the dq kernel computes delta itself
/// (2 launches); on CUDA cores a kernel of its own does (3).
pub fn plan_backward(
    qkv: &Shape,
    n_head: usize,
    n_kv_head: usize,
    tensor_cores: bool,
) -> Result<OpPlan> {
    let a = AttentionDims::of(qkv, n_head, n_kv_head)?;
    let (t, c, nh, nkv) = tchk(&a);
    let (b, scale) = (a.b as u64, a.scale_f32());
    let dkdv = args![In(0), In(2), Workspace, In(3), Out(0), t, c, nh, nkv, scale];
    let launches = if tensor_cores {
        let (_, dq, dkdv_entry) = fa_for(&a)?;
        let dq_args = args![
            In(0),
            In(1),
            In(2),
            In(3),
            Workspace,
            Out(0),
            t,
            c,
            nh,
            nkv,
            scale
        ];
        vec![
            Launch::new(dq, tiles(&a, a.n_head, 128), dq_args),
            Launch::new(dkdv_entry, tiles(&a, a.n_kv_head, 128), dkdv),
        ]
    } else {
        check_cuda_cores(&a)?;
        let delta = args![In(1), In(3), Workspace, b, t, c, nh];
        vec![
            Launch::new(BACKWARD_DELTA, grid(a.lse_rows(), 256), delta),
            Launch::new(BACKWARD_DQ, tiles(&a, a.n_head, 256), dkdv.clone()),
            Launch::new(BACKWARD_DKDV, tiles(&a, a.n_kv_head, 256), dkdv),
        ]
    };
    Ok(OpPlan {
        workspace_bytes: Some(4 * b * nh * t),
        launches,
    })
}

/// Whether this op runs on tensor cores: [`tensor_core_attention`], every
/// tensor 16-byte aligned (the kernels copy rows with 16-byte cp.async), and
/// the tensor-core file compiles.
fn use_tensor_cores(
    cx: &mut CudaBackend,
    dt: DType,
    tensors: &[&TensorRef],
    (n_head, n_kv_head): (usize, usize),
) -> Result<bool> {
    let a = AttentionDims::of(&tensors[0].shape, n_head, n_kv_head)?;
    let aligned = tensors.iter().all(|t| ptr(t) % 16 == 0);
    let Some(entries) = fa_entries(a.head_dim) else {
        return Ok(false);
    };
    let mut tc = aligned && tensor_core_attention(cx, dt, a.head_dim);
    if tc {
        // Should NVRTC reject the file on some setup, attention.cu still works.
        if let Err(e) = cx.function(entries.0, dt) {
            log::warn!("tensor-core attention unavailable, using attention.cu: {e}");
            cx.tc_attention_broken = true;
            tc = false;
        }
    }
    Ok(tc)
}

/// `Op::Attention { n_head, n_kv_head }`: [`plan_forward`].
pub(crate) fn attention_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    (n_head, n_kv_head): (usize, usize),
) -> Result<()> {
    let all: Vec<&TensorRef> = ins.iter().chain(outs).copied().collect();
    let tc = use_tensor_cores(cx, dt, &all, (n_head, n_kv_head))?;
    let plan = plan_forward(&ins[0].shape, n_head, n_kv_head, tc)?;
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::AttentionBackward { n_head, n_kv_head }`: [`plan_backward`].
pub(crate) fn attention_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    (n_head, n_kv_head): (usize, usize),
) -> Result<()> {
    let all: Vec<&TensorRef> = ins.iter().chain(outs).copied().collect();
    let tc = use_tensor_cores(cx, dt, &all, (n_head, n_kv_head))?;
    let plan = plan_backward(&ins[0].shape, n_head, n_kv_head, tc)?;
    cx.run_plan(dt, &plan, ins, outs)
}
