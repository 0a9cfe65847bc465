//! Batched matmul on the cpu: one strided GEMM per batch entry, or one for
//! the whole batch when the second operand is shared.

use rayon::prelude::*;

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
            par_gemm::<F>(
                (m, k, n),
                (a.as_ptr().add(i * a_step), rsa, csa),
                (b.as_ptr().add(i * b_step), rsb, csb),
                (cp.ptr().add(i * m * n), n as isize),
            )
        }
    };
    // Large products split their output below; spread many small ones.
    if batch > 1 && m * n * k < SPLIT_MIN {
        (0..batch).into_par_iter().for_each(run);
    } else {
        (0..batch).for_each(run);
    }
}

/// Below this many multiply-adds a GEMM runs on one thread.
const SPLIT_MIN: usize = 1 << 18;

/// `c = a @ b` (row-major `c` with row stride `rsc`), the output cut into
/// blocks of rows, or of columns when it has fewer rows than columns, one rayon
/// task each, each a single-threaded GEMM.
///
/// One thread pool for every kernel: the GEMM crate's own threads would
/// compete with rayon's for the same cores right after every elementwise op.
/// A block's elements are the same dot products, summed in the same order, as
/// one GEMM over the whole output makes them: the cut changes no bits.
///
/// # Safety
/// As [`Real::gemm`].
unsafe fn par_gemm<F: Real>(
    (m, k, n): (usize, usize, usize),
    (a, rsa, csa): (*const F, isize, isize),
    (b, rsb, csb): (*const F, isize, isize),
    (c, rsc): (*mut F, isize),
) {
    let threads = rayon::current_num_threads();
    let long = m.max(n);
    // Blocks of at least 32 (whole microkernel tiles), about four per thread.
    let blocks = (long / 32).min(4 * threads);
    if threads == 1 || blocks < 2 || m * n * k < SPLIT_MIN {
        return F::gemm(m, k, n, a, rsa, csa, b, rsb, csb, c, rsc, 1, false);
    }
    let size = long.div_ceil(blocks).next_multiple_of(8);
    let (ap, bp, cp) = (SharedPtr(a), SharedPtr(b), SharedMut(c));
    (0..long.div_ceil(size)).into_par_iter().for_each(|i| {
        let (start, len) = (i * size, size.min(long - i * size));
        // SAFETY: block i reads rows (or columns) start..start + len of its
        // operand and writes the same rows (columns) of `c`, disjoint from
        // every other block's.
        let off = start as isize;
        // Row blocks take rows of `a` and `c`; column blocks, columns of `b` and `c`.
        let (rows, cols, a_off, b_off, c_off) = if m >= n {
            (len, n, off * rsa, 0, off * rsc)
        } else {
            (m, len, 0, off * csb, off)
        };
        unsafe {
            F::gemm(
                rows,
                k,
                cols,
                ap.get().offset(a_off),
                rsa,
                csa,
                bp.get().offset(b_off),
                rsb,
                csb,
                cp.ptr().offset(c_off),
                rsc,
                1,
                false,
            )
        }
    });
}

/// A read-only pointer rayon tasks share.
#[derive(Clone, Copy)]
struct SharedPtr<T>(*const T);
impl<T> SharedPtr<T> {
    /// As [`SharedMut::ptr`]: closures capture the wrapper, not the field.
    fn get(self) -> *const T {
        self.0
    }
}
unsafe impl<T> Send for SharedPtr<T> {}
unsafe impl<T> Sync for SharedPtr<T> {}

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
