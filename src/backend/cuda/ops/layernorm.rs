//! `Op::LayerNorm` and its backward (kernels/layernorm.cu). Rows up to
//! [`ROW_MAX`] wide go to row groups: `tpr` threads a row, each holding 8 of
//! its elements in registers (16-byte loads when C and the operands allow), so
//! the forward reads x once and the backward reads dy and x once for dx, dw and
//! db together. Wider rows: a block of 256 threads per row. The forward saves
//! each row's mean and rstd in f32.
//!
//! Under autocast the op is mixed: x, w, b f32 with y f16/bf16, and in the
//! backward dy f16/bf16 with x, w and dx, dw, db f32. Its kernels are the
//! `_mixed` entries, named by the low dtype (`graph::ops::storage_dtype`) and
//! planned as the f32 ones (the f32 side sets the vector width: 4).

use cudarc::driver::LaunchConfig;

use super::elementwise::{aligned16, LOW_DTYPES};
use super::reduce::{column_chunks, vector_width, PARTIALS_CAP};
use crate::backend::cuda::launch::{family_kernels, grid, rows, Entry, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/layernorm.cu.
    pub const KERNELS = "layernorm" {
        FORWARD_ROWS_VEC = "layernorm_forward_rows_vec" for EVERY_DTYPE,
        FORWARD_ROWS = "layernorm_forward_rows" for EVERY_DTYPE,
        BACKWARD_ROWS_VEC = "layernorm_backward_rows_vec" for EVERY_DTYPE,
        BACKWARD_ROWS = "layernorm_backward_rows" for EVERY_DTYPE,
        FORWARD = "layernorm_forward" for EVERY_DTYPE,
        BACKWARD_DX = "layernorm_backward_dx" for EVERY_DTYPE,
        BACKWARD_DWDB = "layernorm_backward_dwdb" for EVERY_DTYPE,
        BACKWARD_DWDB_FINISH = "layernorm_backward_dwdb_finish" for EVERY_DTYPE,
        // f32 x, w, b (dx, dw, db) with f16/bf16 y (dy), the low dtype's suffix.
        MIXED_FORWARD_ROWS_VEC = "layernorm_forward_rows_vec_mixed" for LOW_DTYPES,
        MIXED_FORWARD_ROWS = "layernorm_forward_rows_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_ROWS_VEC = "layernorm_backward_rows_vec_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_ROWS = "layernorm_backward_rows_mixed" for LOW_DTYPES,
        MIXED_FORWARD = "layernorm_forward_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_DX = "layernorm_backward_dx_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_DWDB = "layernorm_backward_dwdb_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_DWDB_FINISH = "layernorm_backward_dwdb_finish_mixed" for LOW_DTYPES,
    }
}

/// The entries of one kind of LayerNorm: one storage type, or mixed.
struct Kernels {
    forward_rows_vec: Entry,
    forward_rows: Entry,
    backward_rows_vec: Entry,
    backward_rows: Entry,
    forward: Entry,
    backward_dx: Entry,
    backward_dwdb: Entry,
    backward_dwdb_finish: Entry,
}

const PLAIN: Kernels = Kernels {
    forward_rows_vec: FORWARD_ROWS_VEC,
    forward_rows: FORWARD_ROWS,
    backward_rows_vec: BACKWARD_ROWS_VEC,
    backward_rows: BACKWARD_ROWS,
    forward: FORWARD,
    backward_dx: BACKWARD_DX,
    backward_dwdb: BACKWARD_DWDB,
    backward_dwdb_finish: BACKWARD_DWDB_FINISH,
};

const MIXED: Kernels = Kernels {
    forward_rows_vec: MIXED_FORWARD_ROWS_VEC,
    forward_rows: MIXED_FORWARD_ROWS,
    backward_rows_vec: MIXED_BACKWARD_ROWS_VEC,
    backward_rows: MIXED_BACKWARD_ROWS,
    forward: MIXED_FORWARD,
    backward_dx: MIXED_BACKWARD_DX,
    backward_dwdb: MIXED_BACKWARD_DWDB,
    backward_dwdb_finish: MIXED_BACKWARD_DWDB_FINISH,
};

/// The widest row a row group takes: 1024 threads of 8 elements.
pub const ROW_MAX: u64 = 8192;

/// A row group for rows of `c`: its threads (8 elements each, a multiple of
/// 32), and whether they load 16 bytes at a time (`aligned`: every operand's
/// address a multiple of 16; C a multiple of the vector width). `None`: wider
/// than [`ROW_MAX`] (or empty). RMSNorm's row groups are the same.
pub(super) fn row_group(c: u64, dt: DType, aligned: bool) -> Option<(u64, bool)> {
    if c == 0 || c > ROW_MAX {
        return None;
    }
    Some((
        c.div_ceil(8).div_ceil(32) * 32,
        aligned && c % vector_width(dt) == 0,
    ))
}

/// `n` blocks (at least one) of `threads`.
pub(super) fn blocks(n: u64, threads: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.max(1) as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The launch of `Op::LayerNorm { eps }` on `x [R, C]` of storage type `dt`:
/// ins x [R, C], w [C], b [C]; outs y [R, C], mean [R] f32, rstd [R] f32.
/// Row groups of `tpr` threads, about 256 threads (`256 / tpr` rows) a block.
pub fn plan_forward(x: &Shape, eps: f64, dt: DType, aligned: bool) -> OpPlan {
    forward(x, eps, dt, aligned, &PLAIN)
}

/// [`plan_forward`] of the mixed op: x [R, C], w [C], b [C] f32; y [R, C] of
/// the low dtype the launches are named by.
pub fn plan_forward_mixed(x: &Shape, eps: f64, aligned: bool) -> OpPlan {
    forward(x, eps, DType::F32, aligned, &MIXED)
}

/// `wide`: the dtype of x, which sets the vector width.
fn forward(x: &Shape, eps: f64, wide: DType, aligned: bool, k: &Kernels) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(x);
    let (r, c) = (r as u64, cols as u64);
    let Some((tpr, vector)) = row_group(c, wide, aligned) else {
        let args = args![In(0), In(1), In(2), Out(0), Out(1), Out(2), c, eps as f32];
        return OpPlan::one(Launch::new(k.forward, rows(r as usize), args));
    };
    let g = (256 / tpr).max(1);
    let entry = if vector {
        k.forward_rows_vec
    } else {
        k.forward_rows
    };
    let (r32, c32, t32) = (r as u32, c as u32, tpr as u32);
    let args = args![
        In(0),
        In(1),
        In(2),
        Out(0),
        Out(1),
        Out(2),
        r32,
        c32,
        t32,
        eps as f32
    ];
    OpPlan::one(Launch::new(entry, blocks(r.div_ceil(g), g * tpr), args))
}

/// The launches of `Op::LayerNormBackward` on `x [R, C]` of storage type `dt`:
/// ins dy [R, C], x [R, C], w [C], mean [R] f32, rstd [R] f32; outs dx [R, C],
/// dw [C], db [C]. Row groups: one pass, blocks of about 1024 threads (G groups)
/// each taking rpb rows (a multiple of G), writing dx and the block's f32
/// partials [blocks][2][C] to the workspace (under [`PARTIALS_CAP`]), which the
/// finish adds in block order. Wider rows: dx a block per row, then dw and db
/// in two fixed-order stages through partials [chunks][2][C].
pub fn plan_backward(x: &Shape, dt: DType, aligned: bool) -> OpPlan {
    backward(x, dt, aligned, &PLAIN)
}

/// [`plan_backward`] of the mixed op: dy [R, C] of the low dtype the launches
/// are named by; x, w and dx, dw, db f32.
pub fn plan_backward_mixed(x: &Shape, aligned: bool) -> OpPlan {
    backward(x, DType::F32, aligned, &MIXED)
}

/// `wide`: the dtype of x, which sets the vector width.
fn backward(x: &Shape, wide: DType, aligned: bool, k: &Kernels) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(x);
    let (r, c) = (r as u64, cols as u64);
    let Some((tpr, vector)) = row_group(c, wide, aligned) else {
        let chunks = column_chunks(c, r);
        let dx = args![In(0), In(1), In(2), In(3), In(4), Out(0), c];
        let dwdb = args![In(0), In(1), In(3), In(4), Workspace, r, c, chunks];
        let finish = args![Workspace, Out(1), Out(2), c, chunks];
        return OpPlan {
            workspace_bytes: Some(4 * 2 * c * chunks),
            launches: vec![
                Launch::new(k.backward_dx, rows(r as usize), dx),
                Launch::new(k.backward_dwdb, grid((c * chunks) as usize, 256), dwdb),
                Launch::new(k.backward_dwdb_finish, grid(c as usize, 256), finish),
            ],
        };
    };
    let g = (1024 / tpr).max(1);
    // At least 4 rows a group, partials under the cap, no block left empty.
    let nb = r.div_ceil(4 * g).min(PARTIALS_CAP / (8 * c)).max(1);
    let rpb = r.div_ceil(nb).div_ceil(g).max(1) * g;
    let nb = r.div_ceil(rpb).max(1);
    let entry = if vector {
        k.backward_rows_vec
    } else {
        k.backward_rows
    };
    let (r32, c32, t32, p32) = (r as u32, c as u32, tpr as u32, rpb as u32);
    let pass = args![
        In(0),
        In(1),
        In(2),
        In(3),
        In(4),
        Out(0),
        Workspace,
        r32,
        c32,
        t32,
        p32
    ];
    let finish = args![Workspace, Out(1), Out(2), c, nb];
    OpPlan {
        workspace_bytes: Some(4 * 2 * c * nb),
        launches: vec![
            Launch::new(entry, blocks(nb, g * tpr), pass),
            Launch::new(k.backward_dwdb_finish, grid(c as usize, 256), finish),
        ],
    }
}

/// The plan of `Op::LayerNorm { eps }` from x [R, C] and y [R, C] of dtypes
/// `x_dt` and `y_dt` (mixed where they differ); `dt` names the kernels.
pub fn plan_for(
    x: &Shape,
    eps: f64,
    (x_dt, y_dt): (DType, DType),
    dt: DType,
    aligned: bool,
) -> OpPlan {
    if x_dt != y_dt {
        plan_forward_mixed(x, eps, aligned)
    } else {
        plan_forward(x, eps, dt, aligned)
    }
}

/// The plan of `Op::LayerNormBackward` from dy [R, C] and x [R, C] of dtypes
/// `dy_dt` and `x_dt` (mixed where they differ); `dt` names the kernels.
pub fn plan_backward_for(
    x: &Shape,
    (dy_dt, x_dt): (DType, DType),
    dt: DType,
    aligned: bool,
) -> OpPlan {
    if dy_dt != x_dt {
        plan_backward_mixed(x, aligned)
    } else {
        plan_backward(x, dt, aligned)
    }
}

/// `Op::LayerNorm { eps }`: [`plan_for`].
pub(crate) fn layernorm_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    eps: f64,
) -> Result<()> {
    let dts = (ins[0].dtype, outs[0].dtype);
    let plan = plan_for(&ins[0].shape, eps, dts, dt, aligned16(&[ins, outs]));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::LayerNormBackward`: [`plan_backward_for`].
pub(crate) fn layernorm_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let dts = (ins[0].dtype, ins[1].dtype);
    let plan = plan_backward_for(&ins[1].shape, dts, dt, aligned16(&[ins, outs]));
    cx.run_plan(dt, &plan, ins, outs)
}
