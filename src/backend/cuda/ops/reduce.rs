//! `Op::Sum`, `Op::Mean` and the adjoint `Op::Expand` (kernels/reduce.cu), for
//! shapes up to rank 6, with the plan of `graph::ops::reduce::reduce_plan`.

use crate::backend::cuda::context::unavailable;
use crate::backend::cuda::launch::{family_kernels, grid, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Arg, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::reduce::{reduce_plan, ReducePlan};
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/reduce.cu.
    pub const KERNELS = "reduce" {
        SUM_PARTIAL = "sum_partial" for EVERY_DTYPE,
        SUM_FINISH = "sum_finish" for EVERY_DTYPE,
        EXPAND = "expand" for EVERY_DTYPE,
    }
}

/// Chunks a column reduction (`outputs` sums of `count` elements each) is split
/// into for its first stage, the chunks then added in order: enough threads to
/// fill a GPU (about 64 K), at least 128 elements a chunk, at most 64 chunks.
pub fn column_chunks(outputs: u64, count: u64) -> u64 {
    (count / 128)
        .clamp(1, 64)
        .min((65536 / outputs.max(1)).max(1))
}

fn plan(full: &Shape, axes: &[usize], mean: bool) -> Result<ReducePlan> {
    reduce_plan(full, axes, mean)
        .ok_or_else(|| unavailable(format!("reductions over rank-{} tensors", full.rank())))
}

/// The launches of `Op::Sum { axes }` (`mean` false) and `Op::Mean { axes }`
/// on `x [full]`: ins x; outs out [N], the full shape without `axes`. Two
/// fixed-order stages: thread (o, chunk) sums its chunk into
/// partial [chunks, N] f32 in the workspace, then each output adds its chunks
/// in order.
pub fn plan_sum(x: &Shape, axes: &[usize], mean: bool) -> Result<OpPlan> {
    let r = plan(x, axes, mean)?;
    // Outputs: the dims off the mask (not numel / count, which a zero-sized
    // reduced dim would break).
    let n: u64 = (0..6)
        .filter(|k| r.mask & (1 << k) == 0)
        .map(|k| r.dims[k] as u64)
        .product();
    let (rank, mask, dims) = (r.rank as u64, r.mask, Arg::Dims(r.dims.map(|d| d as u64)));
    let (count, scale) = (r.count as u64, r.scale as f32);
    let chunks = column_chunks(n, count);
    let partial = args![In(0), Workspace, n, rank, dims, mask, count, chunks];
    let finish = args![Workspace, Out(0), n, chunks, scale];
    Ok(OpPlan {
        workspace_bytes: Some(4 * n * chunks),
        launches: vec![
            Launch::new(SUM_PARTIAL, grid((n * chunks) as usize, 256), partial),
            Launch::new(SUM_FINISH, grid(n as usize, 256), finish),
        ],
    })
}

/// The launch of `Op::Expand { axes, .. }` to `out [full]`: ins x [N]; outs
/// out [full], x repeated over `axes`.
pub fn plan_expand(out: &Shape, axes: &[usize]) -> Result<OpPlan> {
    let r = plan(out, axes, false)?;
    let n = out.numel() as u64;
    let (rank, mask, dims) = (r.rank as u64, r.mask, Arg::Dims(r.dims.map(|d| d as u64)));
    let args = args![In(0), Out(0), n, rank, dims, mask];
    Ok(OpPlan::one(Launch::new(
        EXPAND,
        grid(n as usize, 256),
        args,
    )))
}

/// `Op::Sum`, `Op::Mean`: [`plan_sum`].
pub(crate) fn sum_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axes: &[usize],
    mean: bool,
) -> Result<()> {
    let plan = plan_sum(&ins[0].shape, axes, mean)?;
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::Expand { axes, .. }`: [`plan_expand`].
pub(crate) fn expand_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axes: &[usize],
) -> Result<()> {
    let plan = plan_expand(&outs[0].shape, axes)?;
    cx.run_plan(dt, &plan, ins, outs)
}
