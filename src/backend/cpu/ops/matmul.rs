//! Batched matmul on the cpu: one strided GEMM per batch entry, or one for
//! the whole batch when the second operand is shared.

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real, SharedMut};
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::matmul::{dims, Dims};
use crate::graph::ops::Op;

/// `c[i] = op(a[i]) @ op(b[i])` for each batch entry `i`; shared operands repeat.
pub fn matmul_forward<F: Real>(
    a: &[F],     // [batch?, M, K] or [batch?, K, M] if ta
    b: &[F],     // [batch?, K, N] or [batch?, N, K] if tb
    c: &mut [F], // [batch, M, N]
    d: Dims,
    ta: bool,
    tb: bool,
) {
    let Dims { batch, m, k, n, .. } = d;
    // `[B, M, K] @ [K, N]` (a linear layer) is one (B·M)×K×N product: the
    // rows of `a` and `c` are contiguous across the batch, and one large GEMM
    // packs `b` once and threads well where B small ones would not. Each
    // element is the same dot product in the same order, so nothing changes.
    if batch > 1 && d.b_shared && !d.a_shared && !ta {
        let fold = Dims {
            batch: 1,
            m: batch * m,
            ..d
        };
        return matmul_forward(a, b, c, fold, ta, tb);
    }
    // Element strides of op(a) as an m×k matrix and op(b) as k×n.
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let a_step = if d.a_shared { 0 } else { m * k };
    let b_step = if d.b_shared { 0 } else { k * n };
    let cp = SharedMut(c.as_mut_ptr());
    let run = |i: usize| {
        // SAFETY: each batch entry reads its own (or the shared) operand and writes
        // a disjoint m×n block of `c`; slices were sized by the shape rule.
        unsafe {
            F::gemm(
                m,
                k,
                n,
                a.as_ptr().add(i * a_step),
                rsa,
                csa,
                b.as_ptr().add(i * b_step),
                rsb,
                csb,
                cp.ptr().add(i * m * n),
                n as isize,
                1,
                false,
            )
        }
    };
    // The GEMM crate threads large products itself; spread many small ones.
    if batch > 1 && m * n * k < 64 * 64 * 64 {
        use rayon::prelude::*;
        (0..batch).into_par_iter().for_each(run);
    } else {
        (0..batch).for_each(run);
    }
}

/// Runs [`Op::MatMul`] on `a`, `b` of the shapes in `ins`.
pub(super) fn run<F: Real>(
    op: &Op,
    ins: &[&TensorRef],
    a: &[In<F>],
    o: &mut [&mut [F]],
) -> Result<()> {
    let n = op.name();
    let &Op::MatMul { ta, tb } = op else {
        return Err(misrouted(op));
    };
    let (d, _) = dims(&ins[0].shape, &ins[1].shape, ta, tb)?;
    matmul_forward(a[0].f(n)?, a[1].f(n)?, o[0], d, ta, tb);
    Ok(())
}
