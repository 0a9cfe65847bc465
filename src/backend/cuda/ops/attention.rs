//! Causal self-attention, flash-style (kernels/attention.cu on CUDA cores,
//! kernels/attention_tc.cu on tensor cores): the T×T matrix never exists; the
//! forward keeps each row's log-sum-exp, the backward recomputes probabilities
//! from it.

use cudarc::driver::LaunchConfig;

use crate::backend::cuda::context::unavailable;
use crate::backend::cuda::launch::{family_kernels, grid, Entry, EVERY_DTYPE};
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

family_kernels! {
    /// kernels/attention_tc.cu: tensor cores (WMMA), f16 and bf16 only.
    pub const TC_KERNELS = "attention_tc" {
        TC_FORWARD = "attention_tc_forward" for &[DType::F16, DType::BF16],
        TC_BACKWARD_DQ = "attention_tc_backward_dq" for &[DType::F16, DType::BF16],
        TC_BACKWARD_DKDV = "attention_tc_backward_dkdv" for &[DType::F16, DType::BF16],
    }
}

/// One of the two kernel sets, with its tiling: `threads` per `rows` query (or
/// key) rows of one (batch, head).
struct Path {
    forward: Entry,
    backward_dq: Entry,
    backward_dkdv: Entry,
    rows: usize,
    threads: u32,
}

const CUDA_CORES: Path = Path {
    forward: FORWARD,
    backward_dq: BACKWARD_DQ,
    backward_dkdv: BACKWARD_DKDV,
    rows: 64,
    threads: 256,
};

const TENSOR_CORES: Path = Path {
    forward: TC_FORWARD,
    backward_dq: TC_BACKWARD_DQ,
    backward_dkdv: TC_BACKWARD_DKDV,
    rows: 32,
    threads: 128,
};

/// Whether attention of head size `hd` in `dtype` runs on tensor cores
/// (kernels/attention_tc.cu): f16/bf16, head sizes 16–64 in steps of 16,
/// sm_80 or later. HEADROOM_ATTENTION=cuda-cores forces attention.cu, to
/// compare the two on a GPU.
fn tensor_core_attention(cx: &CudaBackend, dtype: DType, hd: usize) -> bool {
    let forced_off = std::env::var("HEADROOM_ATTENTION").is_ok_and(|v| v == "cuda-cores");
    !forced_off && !cx.tc_attention_broken && cx.sm() >= 80 && tensor_core_dims(dtype, hd)
}

/// The dtypes and head sizes attention_tc.cu is written for.
fn tensor_core_dims(dtype: DType, hd: usize) -> bool {
    matches!(dtype, DType::F16 | DType::BF16) && hd % 16 == 0 && hd <= 64
}

/// Whether attention over `qkv` with `n_head` heads in `dtype` can take the
/// tensor-core kernels on an sm_80+ GPU.
pub fn tensor_core_shape(dtype: DType, qkv: &Shape, n_head: usize) -> Result<bool> {
    Ok(tensor_core_dims(
        dtype,
        AttentionDims::of(qkv, n_head)?.head_dim,
    ))
}

/// The tiles both directions share: one block per `path.rows` rows of one
/// (batch, head), after checking the head size the kernels can take.
fn tiles(a: &AttentionDims, path: &Path) -> Result<LaunchConfig> {
    let hd = a.head_dim;
    if hd > 128 || hd % 4 != 0 {
        return Err(unavailable(format!(
            "attention head size {hd} (a multiple of 4, at most 128)"
        )));
    }
    Ok(LaunchConfig {
        grid_dim: (a.t.div_ceil(path.rows) as u32, a.n_head as u32, a.b as u32),
        block_dim: (path.threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn path(tensor_cores: bool) -> &'static Path {
    if tensor_cores {
        &TENSOR_CORES
    } else {
        &CUDA_CORES
    }
}

/// `(T, C, H)` as the kernels take them.
fn tch(a: &AttentionDims) -> (u64, u64, u64) {
    (a.t as u64, a.c as u64, a.n_head as u64)
}

/// The launches of `Op::Attention { n_head }` on `qkv [B, T, 3C]`, on tensor
/// cores or not: ins qkv; outs out [B, T, C], lse [B, H, T] f32.
pub fn plan_forward(qkv: &Shape, n_head: usize, tensor_cores: bool) -> Result<OpPlan> {
    let a = AttentionDims::of(qkv, n_head)?;
    let path = path(tensor_cores);
    let cfg = tiles(&a, path)?;
    let (t, c, nh) = tch(&a);
    let args = args![In(0), Out(0), Out(1), t, c, nh, a.scale_f32()];
    Ok(OpPlan::one(Launch::new(path.forward, cfg, args)))
}

/// The launches of `Op::AttentionBackward { n_head }`: ins qkv [B, T, 3C],
/// out [B, T, C], lse [B, H, T] f32, dout [B, T, C]; outs dqkv [B, T, 3C].
/// Σ dout·out per row goes to the workspace first (delta [B, H, T] f32); dq
/// and dk/dv then write disjoint columns of dqkv, in two kernels so that
/// nothing needs atomics.
pub fn plan_backward(qkv: &Shape, n_head: usize, tensor_cores: bool) -> Result<OpPlan> {
    let a = AttentionDims::of(qkv, n_head)?;
    let path = path(tensor_cores);
    let cfg = tiles(&a, path)?;
    let (t, c, nh) = tch(&a);
    let b = a.b as u64;
    let delta = args![In(1), In(3), Workspace, b, t, c, nh];
    let mut launches = vec![Launch::new(BACKWARD_DELTA, grid(a.lse_rows(), 256), delta)];
    for entry in [path.backward_dq, path.backward_dkdv] {
        let args = args![
            In(0),
            In(2),
            Workspace,
            In(3),
            Out(0),
            t,
            c,
            nh,
            a.scale_f32()
        ];
        launches.push(Launch::new(entry, cfg, args));
    }
    Ok(OpPlan {
        workspace_bytes: Some(4 * b * nh * t),
        launches,
    })
}

/// Whether this op runs on tensor cores: [`tensor_core_attention`], and the
/// tensor-core file compiles.
fn use_tensor_cores(
    cx: &mut CudaBackend,
    dt: DType,
    qkv: &TensorRef,
    n_head: usize,
) -> Result<bool> {
    let a = AttentionDims::of(&qkv.shape, n_head)?;
    let mut tc = tensor_core_attention(cx, qkv.dtype, a.head_dim);
    if tc {
        // The file needs CUDA's crt/mma.h; without it (a bare pip install),
        // attention.cu still works.
        if let Err(e) = cx.function(TC_FORWARD, dt) {
            log::warn!("tensor-core attention unavailable, using attention.cu: {e}");
            cx.tc_attention_broken = true;
            tc = false;
        }
    }
    Ok(tc)
}

/// `Op::Attention { n_head }`: [`plan_forward`].
pub(crate) fn attention_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    n_head: usize,
) -> Result<()> {
    let tc = use_tensor_cores(cx, dt, ins[0], n_head)?;
    let plan = plan_forward(&ins[0].shape, n_head, tc)?;
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::AttentionBackward { n_head }`: [`plan_backward`].
pub(crate) fn attention_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    n_head: usize,
) -> Result<()> {
    let tc = use_tensor_cores(cx, dt, ins[0], n_head)?;
    let plan = plan_backward(&ins[0].shape, n_head, tc)?;
    cx.run_plan(dt, &plan, ins, outs)
}
