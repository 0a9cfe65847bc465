//! `Op::Sum`, `Op::Mean` and the adjoint `Op::Expand` (kernels/reduce.cu), for
//! shapes up to rank 6, with the plan of `graph::ops::reduce::reduce_plan`.

use crate::backend::cuda::context::unavailable;
use cudarc::driver::LaunchConfig;

use crate::backend::cuda::launch::{family_kernels, grid, ptr, EVERY_DTYPE};
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
        COLSUM_PARTIAL_VEC = "colsum_partial_vec" for EVERY_DTYPE,
        COLSUM_PARTIAL = "colsum_partial" for EVERY_DTYPE,
        COLSUM_FINISH = "colsum_finish" for EVERY_DTYPE,
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

/// The most workspace a column sum's partials take: the op workspace is a side
/// buffer outside the caching allocator (so outside the planner's peak), kept
/// under 1 MiB, as big as attention's row statistics for GPT-2 at 16 × 1024.
pub const PARTIALS_CAP: u64 = 768 << 10;

/// Elements in 16 bytes of `dt`: a vectorised kernel's width.
pub fn vector_width(dt: DType) -> u64 {
    16 / dt.size_in_bytes() as u64
}

fn plan(full: &Shape, axes: &[usize], mean: bool) -> Result<ReducePlan> {
    reduce_plan(full, axes, mean)
        .ok_or_else(|| unavailable(format!("reductions over rank-{} tensors", full.rank())))
}

/// `x [full]` as the column sum `[rows, cols] → [cols]` when `axes` are its
/// leading axes (all of them: cols = 1) and the kernels' 32-bit indices reach
/// every element; `None` for any other reduction.
pub fn as_column_sum(full: &Shape, axes: &[usize]) -> Option<(u64, u64)> {
    let k = axes.len();
    if k == 0 || axes.iter().enumerate().any(|(i, &a)| a != i) {
        return None;
    }
    let rows: u64 = full.dims()[..k].iter().map(|&d| d as u64).product();
    let cols: u64 = full.dims()[k..].iter().map(|&d| d as u64).product();
    let fits = rows.checked_mul(cols).is_some_and(|n| n < 1 << 32);
    (rows > 0 && cols > 0 && fits).then_some((rows, cols))
}

/// The launches of a column sum `x [rows, cols] → out [cols]` (times `scale`):
/// blocks of 8 × 32 threads, each thread `v` columns wide (16 bytes when
/// `vector`, one element otherwise), one block per (strip of 32·v columns, slab
/// of rows); the slabs' f32 partials [slabs, cols] in the workspace, then added
/// in order. About 1024 blocks when the rows allow (at least 64 rows a slab),
/// the partials under [`PARTIALS_CAP`].
fn plan_column_sum(rows: u64, cols: u64, scale: f32, v: u64, vector: bool) -> OpPlan {
    let v = if vector { v } else { 1 };
    let strips = cols.div_ceil(32 * v);
    let slabs = 1024u64
        .div_ceil(strips)
        .min(rows.div_ceil(64))
        .min(PARTIALS_CAP / (4 * cols))
        .max(1);
    // Rows a slab, then the slabs that leaves none of them empty.
    let rps = rows.div_ceil(slabs);
    let slabs = rows.div_ceil(rps);
    let partial_entry = if vector {
        COLSUM_PARTIAL_VEC
    } else {
        COLSUM_PARTIAL
    };
    let tiles = LaunchConfig {
        grid_dim: (strips as u32, slabs as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (r, c, p, g) = (rows as u32, cols as u32, rps as u32, slabs as u32);
    OpPlan {
        workspace_bytes: Some(4 * slabs * cols),
        launches: vec![
            Launch::new(partial_entry, tiles, args![In(0), Workspace, r, c, p]),
            Launch::new(
                COLSUM_FINISH,
                grid(cols as usize, 256),
                args![Workspace, Out(0), c, g, scale],
            ),
        ],
    }
}

/// The launches of `Op::Sum { axes }` (`mean` false) and `Op::Mean { axes }`
/// on `x [full]` of storage type `dt`: ins x; outs out [N], the full shape
/// without `axes`. A column sum (leading axes: a bias gradient) is tiled
/// ([`plan_column_sum`]), with 16-byte loads when N is a multiple of the vector
/// width and `aligned` (x's address is a multiple of 16). Any other reduction:
/// two fixed-order stages, thread (o, chunk) summing its chunk into
/// partial [chunks, N] f32 in the workspace, then each output adding its
/// chunks in order.
pub fn plan_sum(x: &Shape, axes: &[usize], mean: bool, dt: DType, aligned: bool) -> Result<OpPlan> {
    let r = plan(x, axes, mean)?;
    let (count, scale) = (r.count as u64, r.scale as f32);
    if let Some((rows, cols)) = as_column_sum(x, axes) {
        let v = vector_width(dt);
        let vector = aligned && cols % v == 0;
        return Ok(plan_column_sum(rows, cols, scale, v, vector));
    }
    // Outputs: the dims off the mask (not numel / count, which a zero-sized
    // reduced dim would break).
    let n: u64 = (0..6)
        .filter(|k| r.mask & (1 << k) == 0)
        .map(|k| r.dims[k] as u64)
        .product();
    let (rank, mask, dims) = (r.rank as u64, r.mask, Arg::Dims(r.dims.map(|d| d as u64)));
    let chunks = column_chunks(n, count);
    let wide = u32::from(x.numel() as u64 >= 1 << 32);
    let partial = args![In(0), Workspace, n, rank, dims, mask, count, chunks, wide];
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
    let aligned = ptr(ins[0]) % 16 == 0;
    let plan = plan_sum(&ins[0].shape, axes, mean, dt, aligned)?;
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
