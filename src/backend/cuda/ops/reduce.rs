//! `Op::Sum`, `Op::Mean` and the adjoint `Op::Expand` (kernels/reduce.cu), for
//! shapes up to rank 6, with the plan of `graph::ops::reduce::reduce_plan`.

use crate::backend::cuda::context::unavailable;
use crate::backend::cuda::launch::{family_kernels, grid, launch, numel, ptr, Dims6, EVERY_DTYPE};
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

fn plan(full: &Shape, axes: &[usize], mean: bool) -> Result<(ReducePlan, Dims6)> {
    let r = reduce_plan(full, axes, mean)
        .ok_or_else(|| unavailable(format!("reductions over rank-{} tensors", full.rank())))?;
    let dims = Dims6 {
        d: r.dims.map(|d| d as u64),
    };
    Ok((r, dims))
}

/// `Op::Sum { axes }` (`mean` false) and `Op::Mean { axes }`: ins x [full];
/// outs out [N], the full shape without `axes`. Two fixed-order stages: thread
/// (o, chunk) sums its chunk into partial [chunks, N] f32 in the workspace,
/// then each output adds its chunks in order.
pub(crate) fn sum_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axes: &[usize],
    mean: bool,
) -> Result<()> {
    let (x, out) = (ins[0], outs[0]);
    let n = numel(out);
    let (r, dims) = plan(&x.shape, axes, mean)?;
    let (rank, mask) = (r.rank as u64, r.mask);
    let (count, scale) = (r.count as u64, r.scale as f32);
    let chunks = column_chunks(n, count);
    let partial = cx.workspace(4 * n * chunks)?;
    let cfg = grid((n * chunks) as usize, 256);
    let x = ptr(x);
    launch!(
        cx,
        SUM_PARTIAL,
        dt,
        cfg,
        x,
        partial,
        n,
        rank,
        dims,
        mask,
        count,
        chunks
    )?;
    let cfg = grid(n as usize, 256);
    launch!(cx, SUM_FINISH, dt, cfg, partial, ptr(out), n, chunks, scale)
}

/// `Op::Expand { axes, .. }`: ins x [N]; outs out [full], x repeated over `axes`.
pub(crate) fn expand_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    axes: &[usize],
) -> Result<()> {
    let (x, out) = (ins[0], outs[0]);
    let n = numel(out);
    let (r, dims) = plan(&out.shape, axes, false)?;
    let (rank, mask) = (r.rank as u64, r.mask);
    let cfg = grid(n as usize, 256);
    launch!(cx, EXPAND, dt, cfg, ptr(x), ptr(out), n, rank, dims, mask)
}
