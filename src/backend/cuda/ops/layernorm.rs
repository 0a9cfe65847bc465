//! `Op::LayerNorm` and its backward (kernels/layernorm.cu). Rows up to
//! [`ROW_MAX`] wide go to row groups: `tpr` threads a row, each holding 8 of
//! its elements in registers (16-byte loads when C and the operands allow), so
//! the forward reads x once and the backward reads dy and x once for dx, dw and
//! db together. Wider rows: a block of 256 threads per row. The forward saves
//! each row's mean and rstd in f32.

use cudarc::driver::LaunchConfig;

use super::elementwise::aligned16;
use super::reduce::{column_chunks, vector_width, PARTIALS_CAP};
use crate::backend::cuda::launch::{family_kernels, grid, rows, EVERY_DTYPE};
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
    }
}

/// The widest row a row group takes: 1024 threads of 8 elements.
pub const ROW_MAX: u64 = 8192;

/// A row group for rows of `c`: its threads (8 elements each, a multiple of
/// 32), and whether they load 16 bytes at a time (`aligned`: every operand's
/// address a multiple of 16; C a multiple of the vector width). `None`: wider
/// than [`ROW_MAX`] (or empty).
fn row_group(c: u64, dt: DType, aligned: bool) -> Option<(u64, bool)> {
    if c == 0 || c > ROW_MAX {
        return None;
    }
    Some((
        c.div_ceil(8).div_ceil(32) * 32,
        aligned && c % vector_width(dt) == 0,
    ))
}

fn blocks(n: u64, threads: u64) -> LaunchConfig {
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
    let RowDims { rows: r, cols } = RowDims::of(x);
    let (r, c) = (r as u64, cols as u64);
    let Some((tpr, vector)) = row_group(c, dt, aligned) else {
        let args = args![In(0), In(1), In(2), Out(0), Out(1), Out(2), c, eps as f32];
        return OpPlan::one(Launch::new(FORWARD, rows(r as usize), args));
    };
    let g = (256 / tpr).max(1);
    let entry = if vector {
        FORWARD_ROWS_VEC
    } else {
        FORWARD_ROWS
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
    let RowDims { rows: r, cols } = RowDims::of(x);
    let (r, c) = (r as u64, cols as u64);
    let Some((tpr, vector)) = row_group(c, dt, aligned) else {
        let chunks = column_chunks(c, r);
        let dx = args![In(0), In(1), In(2), In(3), In(4), Out(0), c];
        let dwdb = args![In(0), In(1), In(3), In(4), Workspace, r, c, chunks];
        let finish = args![Workspace, Out(1), Out(2), c, chunks];
        return OpPlan {
            workspace_bytes: Some(4 * 2 * c * chunks),
            launches: vec![
                Launch::new(BACKWARD_DX, rows(r as usize), dx),
                Launch::new(BACKWARD_DWDB, grid((c * chunks) as usize, 256), dwdb),
                Launch::new(BACKWARD_DWDB_FINISH, grid(c as usize, 256), finish),
            ],
        };
    };
    let g = (1024 / tpr).max(1);
    // At least 4 rows a group, partials under the cap, no block left empty.
    let nb = r.div_ceil(4 * g).min(PARTIALS_CAP / (8 * c)).max(1);
    let rpb = r.div_ceil(nb).div_ceil(g).max(1) * g;
    let nb = r.div_ceil(rpb).max(1);
    let entry = if vector {
        BACKWARD_ROWS_VEC
    } else {
        BACKWARD_ROWS
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
            Launch::new(BACKWARD_DWDB_FINISH, grid(c as usize, 256), finish),
        ],
    }
}

/// `Op::LayerNorm { eps }`: [`plan_forward`].
pub(crate) fn layernorm_forward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    eps: f64,
) -> Result<()> {
    let plan = plan_forward(&ins[0].shape, eps, dt, aligned16(&[ins, outs]));
    cx.run_plan(dt, &plan, ins, outs)
}

/// `Op::LayerNormBackward`: [`plan_backward`].
pub(crate) fn layernorm_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let plan = plan_backward(&ins[1].shape, dt, aligned16(&[ins, outs]));
    cx.run_plan(dt, &plan, ins, outs)
}
