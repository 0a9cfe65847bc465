//! Causal self-attention, flash-style (kernels/attention.cu on CUDA cores,
//! kernels/attention_tc.cu on tensor cores): the T×T matrix never exists; the
//! forward keeps each row's log-sum-exp, the backward recomputes probabilities
//! from it.

use cudarc::driver::LaunchConfig;

use crate::backend::cuda::context::unavailable;
use crate::backend::cuda::launch::{family_kernels, grid, launch, ptr, Entry, EVERY_DTYPE};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::attention::AttentionDims;
use crate::tensor::DType;

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
    !forced_off
        && !cx.tc_attention_broken
        && cx.sm() >= 80
        && matches!(dtype, DType::F16 | DType::BF16)
        && hd % 16 == 0
        && hd <= 64
}

/// The launch shape both directions share.
struct Plan {
    path: &'static Path,
    tiles: LaunchConfig,
    b: u64,
    t: u64,
    c: u64,
    nh: u64,
    scale: f32,
}

fn plan(cx: &mut CudaBackend, dt: DType, qkv: &TensorRef, n_head: usize) -> Result<Plan> {
    let a = AttentionDims::of(&qkv.shape, n_head)?;
    let (b, t, c, hd) = (a.b, a.t, a.c, a.head_dim);
    if hd > 128 || hd % 4 != 0 {
        return Err(unavailable(format!(
            "attention head size {hd} (a multiple of 4, at most 128)"
        )));
    }
    let scale = a.scale_f32();
    let mut tc = tensor_core_attention(cx, qkv.dtype, hd);
    if tc {
        // The file needs CUDA's crt/mma.h; without it (a bare pip install),
        // attention.cu still works.
        if let Err(e) = cx.function(TC_FORWARD, dt) {
            log::warn!("tensor-core attention unavailable, using attention.cu: {e}");
            cx.tc_attention_broken = true;
            tc = false;
        }
    }
    let path = if tc { &TENSOR_CORES } else { &CUDA_CORES };
    let tiles = LaunchConfig {
        grid_dim: (t.div_ceil(path.rows) as u32, n_head as u32, b as u32),
        block_dim: (path.threads, 1, 1),
        shared_mem_bytes: 0,
    };
    Ok(Plan {
        path,
        tiles,
        b: b as u64,
        t: t as u64,
        c: c as u64,
        nh: n_head as u64,
        scale,
    })
}

/// `Op::Attention { n_head }`: ins qkv [B, T, 3C] (q | k | v, head h at columns
/// h·hd of each); outs out [B, T, C], lse [B, H, T] f32.
pub(crate) fn attention_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    n_head: usize,
) -> Result<()> {
    let p = plan(cx, dt, ins[0], n_head)?;
    let (qkv, out, lse) = (ptr(ins[0]), ptr(outs[0]), ptr(outs[1]));
    let (t, c, nh, scale) = (p.t, p.c, p.nh, p.scale);
    launch!(
        cx,
        p.path.forward,
        dt,
        p.tiles,
        qkv,
        out,
        lse,
        t,
        c,
        nh,
        scale
    )
}

/// `Op::AttentionBackward { n_head }`: ins qkv [B, T, 3C], out [B, T, C],
/// lse [B, H, T] f32, dout [B, T, C]; outs dqkv [B, T, 3C]. Σ dout·out per row
/// goes to the workspace first (delta [B, H, T] f32); dq and dk/dv then write
/// disjoint columns of dqkv, in two kernels so that nothing needs atomics.
pub(crate) fn attention_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    n_head: usize,
) -> Result<()> {
    let p = plan(cx, dt, ins[0], n_head)?;
    let (qkv, out, lse, dout) = (ptr(ins[0]), ptr(ins[1]), ptr(ins[2]), ptr(ins[3]));
    let dqkv = ptr(outs[0]);
    let (b, t, c, nh, scale) = (p.b, p.t, p.c, p.nh, p.scale);
    let delta = cx.workspace(4 * b * nh * t)?;
    let rows_cfg = grid((b * nh * t) as usize, 256);
    launch!(
        cx,
        BACKWARD_DELTA,
        dt,
        rows_cfg,
        out,
        dout,
        delta,
        b,
        t,
        c,
        nh
    )?;
    for entry in [p.path.backward_dq, p.path.backward_dkdv] {
        launch!(cx, entry, dt, p.tiles, qkv, lse, delta, dout, dqkv, t, c, nh, scale)?;
    }
    Ok(())
}
