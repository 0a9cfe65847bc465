//! `Op::RmsNorm` and its backward (kernels/rmsnorm.cu), planned as LayerNorm's
//! (`layernorm.rs`): rows up to [`ROW_MAX`](super::layernorm::ROW_MAX) wide
//! go to row groups of `tpr` threads holding 8 elements each in registers, so
//! the forward reads x once and the backward reads dy and x once for dx and
//! dw together; wider rows take a block of 256 threads per row. The forward saves each row's rstd in
//! f32. dw is summed in a fixed order (rows in order within a block or chunk,
//! then blocks or chunks in order), so it does not depend on timing.
//!
//! Under autocast the op is mixed as LayerNorm is: x and w f32 with y
//! f16/bf16, and in the backward dy f16/bf16 with x, w and dx, dw f32; the
//! `_mixed` entries, named by the low dtype and planned as the f32 ones.

use super::elementwise::{aligned16, LOW_DTYPES};
use super::layernorm::{blocks, row_group};
use super::reduce::{column_chunks, PARTIALS_CAP};
use crate::backend::cuda::launch::{family_kernels, grid, rows, Entry, EVERY_DTYPE};
use crate::backend::cuda::plan::{args, Buf::*, Launch, OpPlan};
use crate::backend::cuda::CudaBackend;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::softmax::RowDims;
use crate::tensor::{DType, Shape};

family_kernels! {
    /// kernels/rmsnorm.cu.
    pub const KERNELS = "rmsnorm" {
        FORWARD_ROWS_VEC = "rmsnorm_forward_rows_vec" for EVERY_DTYPE,
        FORWARD_ROWS = "rmsnorm_forward_rows" for EVERY_DTYPE,
        BACKWARD_ROWS_VEC = "rmsnorm_backward_rows_vec" for EVERY_DTYPE,
        BACKWARD_ROWS = "rmsnorm_backward_rows" for EVERY_DTYPE,
        FORWARD = "rmsnorm_forward" for EVERY_DTYPE,
        BACKWARD_DX = "rmsnorm_backward_dx" for EVERY_DTYPE,
        BACKWARD_DW = "rmsnorm_backward_dw" for EVERY_DTYPE,
        BACKWARD_DW_FINISH = "rmsnorm_backward_dw_finish" for EVERY_DTYPE,
        // f32 x, w (dx, dw) with f16/bf16 y (dy), the low dtype's suffix.
        MIXED_FORWARD_ROWS_VEC = "rmsnorm_forward_rows_vec_mixed" for LOW_DTYPES,
        MIXED_FORWARD_ROWS = "rmsnorm_forward_rows_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_ROWS_VEC = "rmsnorm_backward_rows_vec_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_ROWS = "rmsnorm_backward_rows_mixed" for LOW_DTYPES,
        MIXED_FORWARD = "rmsnorm_forward_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_DX = "rmsnorm_backward_dx_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_DW = "rmsnorm_backward_dw_mixed" for LOW_DTYPES,
        MIXED_BACKWARD_DW_FINISH = "rmsnorm_backward_dw_finish_mixed" for LOW_DTYPES,
    }
}

/// The entries of one kind of RMSNorm: one storage type, or mixed.
struct Kernels {
    forward_rows_vec: Entry,
    forward_rows: Entry,
    backward_rows_vec: Entry,
    backward_rows: Entry,
    forward: Entry,
    backward_dx: Entry,
    backward_dw: Entry,
    backward_dw_finish: Entry,
}

const PLAIN: Kernels = Kernels {
    forward_rows_vec: FORWARD_ROWS_VEC,
    forward_rows: FORWARD_ROWS,
    backward_rows_vec: BACKWARD_ROWS_VEC,
    backward_rows: BACKWARD_ROWS,
    forward: FORWARD,
    backward_dx: BACKWARD_DX,
    backward_dw: BACKWARD_DW,
    backward_dw_finish: BACKWARD_DW_FINISH,
};

const MIXED: Kernels = Kernels {
    forward_rows_vec: MIXED_FORWARD_ROWS_VEC,
    forward_rows: MIXED_FORWARD_ROWS,
    backward_rows_vec: MIXED_BACKWARD_ROWS_VEC,
    backward_rows: MIXED_BACKWARD_ROWS,
    forward: MIXED_FORWARD,
    backward_dx: MIXED_BACKWARD_DX,
    backward_dw: MIXED_BACKWARD_DW,
    backward_dw_finish: MIXED_BACKWARD_DW_FINISH,
};

/// The launch of `Op::RmsNorm { eps }` on `x [R, C]` of storage type `dt`:
/// ins x [R, C], w [C]; outs y [R, C], rstd [R] f32. Row groups of `tpr`
/// threads, about 256 threads (`256 / tpr` rows) a block; wider rows, a
/// block per row.
pub fn plan_forward(x: &Shape, eps: f64, dt: DType, aligned: bool) -> OpPlan {
    forward(x, eps, dt, aligned, &PLAIN)
}

/// [`plan_forward`] of the mixed op: x [R, C], w [C] f32; y [R, C] of the low
/// dtype the launches are named by.
pub fn plan_forward_mixed(x: &Shape, eps: f64, aligned: bool) -> OpPlan {
    forward(x, eps, DType::F32, aligned, &MIXED)
}

/// `wide`: the dtype of x, which sets the vector width.
fn forward(x: &Shape, eps: f64, wide: DType, aligned: bool, k: &Kernels) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(x);
    let (r, c) = (r as u64, cols as u64);
    let Some((tpr, vector)) = row_group(c, wide, aligned) else {
        let args = args![In(0), In(1), Out(0), Out(1), c, eps as f32];
        return OpPlan::one(Launch::new(k.forward, rows(r as usize), args));
    };
    let g = (256 / tpr).max(1);
    let entry = if vector {
        k.forward_rows_vec
    } else {
        k.forward_rows
    };
    let (r32, c32, t32) = (r as u32, c as u32, tpr as u32);
    let args = args![In(0), In(1), Out(0), Out(1), r32, c32, t32, eps as f32];
    OpPlan::one(Launch::new(entry, blocks(r.div_ceil(g), g * tpr), args))
}

/// The launches of `Op::RmsNormBackward` on `x [R, C]` of storage type `dt`:
/// ins dy [R, C], x [R, C], w [C], rstd [R] f32; outs dx [R, C], dw [C]. Row
/// groups: one pass, blocks of about 1024 threads (G groups) each taking rpb
/// rows (a multiple of G), writing dx and the block's f32 partials
/// [blocks][C] to the workspace (under [`PARTIALS_CAP`]), which the finish
/// adds in block order. Wider rows: dx a block per row, then dw in two
/// fixed-order stages through partials [chunks][C].
pub fn plan_backward(x: &Shape, dt: DType, aligned: bool) -> OpPlan {
    backward(x, dt, aligned, &PLAIN)
}

/// [`plan_backward`] of the mixed op: dy [R, C] of the low dtype the launches
/// are named by; x, w and dx, dw f32.
pub fn plan_backward_mixed(x: &Shape, aligned: bool) -> OpPlan {
    backward(x, DType::F32, aligned, &MIXED)
}

/// `wide`: the dtype of x, which sets the vector width.
fn backward(x: &Shape, wide: DType, aligned: bool, k: &Kernels) -> OpPlan {
    let RowDims { rows: r, cols } = RowDims::of(x);
    let (r, c) = (r as u64, cols as u64);
    let Some((tpr, vector)) = row_group(c, wide, aligned) else {
        let chunks = column_chunks(c, r);
        let dx = args![In(0), In(1), In(2), In(3), Out(0), c];
        let dw = args![In(0), In(1), In(3), Workspace, r, c, chunks];
        let finish = args![Workspace, Out(1), c, chunks];
        return OpPlan {
            workspace_bytes: Some(4 * c * chunks),
            launches: vec![
                Launch::new(k.backward_dx, rows(r as usize), dx),
                Launch::new(k.backward_dw, grid((c * chunks) as usize, 256), dw),
                Launch::new(k.backward_dw_finish, grid(c as usize, 256), finish),
            ],
        };
    };
    let g = (1024 / tpr).max(1);
    // At least 4 rows a group, partials under the cap, no block left empty.
    let nb = r.div_ceil(4 * g).min(PARTIALS_CAP / (4 * c)).max(1);
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
        Out(0),
        Workspace,
        r32,
        c32,
        t32,
        p32
    ];
    let finish = args![Workspace, Out(1), c, nb];
    OpPlan {
        workspace_bytes: Some(4 * c * nb),
        launches: vec![
            Launch::new(entry, blocks(nb, g * tpr), pass),
            Launch::new(k.backward_dw_finish, grid(c as usize, 256), finish),
        ],
    }
}

/// The plan of `Op::RmsNorm { eps }` from x [R, C] and y [R, C] of dtypes
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

/// The plan of `Op::RmsNormBackward` from dy [R, C] and x [R, C] of dtypes
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

/// `Op::RmsNorm { eps }`: [`plan_for`].
pub(crate) fn rmsnorm_forward(
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

/// `Op::RmsNormBackward`: [`plan_backward_for`].
pub(crate) fn rmsnorm_backward(
    cx: &mut CudaBackend,
    dt: DType,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
) -> Result<()> {
    let dts = (ins[0].dtype, ins[1].dtype);
    let plan = plan_backward_for(&ins[1].shape, dts, dt, aligned16(&[ins, outs]));
    cx.run_plan(dt, &plan, ins, outs)
}
