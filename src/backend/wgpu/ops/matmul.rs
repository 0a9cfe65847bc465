//! Batched matrix multiply with either operand transposed.

use super::{Aliases, Kernel, Shader};
use crate::backend::wgpu::dispatch::{u, Bind};
use crate::backend::wgpu::{unsupported, WgpuBackend};
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::matmul::dims;

const MATMUL: Shader = Shader {
    file: "matmul",
    source: include_str!("../../../../shaders/matmul.wgsl"),
    entries: &["main"],
    aliases: Aliases::T,
};

pub const SHADERS: &[Shader] = &[MATMUL];

const MAIN: Kernel = MATMUL.kernel("main");

/// `a [.., M, K]` (`[.., K, M]` when `ta`), `b [.., K, N]` (`[.., N, K]` when
/// `tb`) → `c [.., M, N]`. Transposes are strides, not copies; a 2-D operand is
/// shared by the batch (batch stride 0). One 16×16 workgroup per output tile,
/// the batch on the grid's z.
pub(crate) fn matmul_forward(
    gpu: &mut WgpuBackend,
    ins: &[&TensorRef],
    outs: &[&TensorRef],
    ta: bool,
    tb: bool,
) -> Result<()> {
    let (a, b, c) = (ins[0], ins[1], outs[0]);
    let (d, _) = dims(&a.shape, &b.shape, ta, tb)?;
    // Row and column strides of op(a) [M, K] and op(b) [K, N].
    let (rsa, csa) = if ta { (1, d.m) } else { (d.k, 1) };
    let (rsb, csb) = if tb { (1, d.k) } else { (d.n, 1) };
    let ast = if d.a_shared { 0 } else { d.m * d.k };
    let bst = if d.b_shared { 0 } else { d.k * d.n };
    if d.batch > 65535 {
        return Err(unsupported(format!(
            "matmul batches of {} (at most 65535)",
            d.batch
        )));
    }
    let p = [
        u(d.m),
        u(d.n),
        u(d.k),
        u(rsa),
        u(csa),
        u(rsb),
        u(csb),
        u(ast),
        u(bst),
    ];
    let g = (u(d.n.div_ceil(16)), u(d.m.div_ceil(16)), u(d.batch));
    gpu.dispatch(
        MAIN,
        &p,
        &[(1, Bind::T(a)), (2, Bind::T(b)), (3, Bind::T(c))],
        g,
    )
}
