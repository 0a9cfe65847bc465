//! RMSNorm on the cpu: rows in parallel, the weight gradient summed in row
//! order (so it does not depend on the thread count).

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::error::{Error, Result};
use crate::graph::ops::Op;

/// Each row of `x` scaled by `rstd = 1 / √(mean(x²) + eps)`, then by `w`;
/// saves the row's rstd.
pub fn rmsnorm_forward<F: Real>(
    x: &[F],        // [N, C]
    w: &[F],        // [C]
    y: &mut [F],    // [N, C]
    rstd: &mut [F], // [N]
    eps: f64,
) {
    let c = w.len();
    let (cn, eps) = (F::c(c as f64), F::c(eps));
    let row = |((yr, xr), r): ((&mut [F], &[F]), &mut F)| {
        let ms = xr.iter().map(|&v| v * v).sum::<F>() / cn;
        let rs = F::one() / (ms + eps).sqrt();
        for i in 0..c {
            yr[i] = xr[i] * rs * w[i];
        }
        *r = rs;
    };
    if y.len() >= super::elementwise::PAR_MIN {
        y.par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .zip(rstd.par_iter_mut())
            .for_each(row);
    } else {
        y.chunks_mut(c)
            .zip(x.chunks(c))
            .zip(rstd.iter_mut())
            .for_each(row);
    }
}

/// Gradients of [`rmsnorm_forward`] from the saved rstd: with `n = x · rstd`
/// and `g = w · dy`, `dx = rstd · (g − n · mean(g · n))` and `dw = Σ dy · n`
/// over rows.
pub fn rmsnorm_backward<F: Real>(
    dy: &[F],     // [N, C]
    x: &[F],      // [N, C]
    w: &[F],      // [C]
    rstd: &[F],   // [N]
    dx: &mut [F], // [N, C]
    dw: &mut [F], // [C]
) {
    let c = w.len();
    let cn = F::c(c as f64);
    let row = |(i, dxr): (usize, &mut [F])| {
        let (xr, dyr, rs) = (&x[i * c..(i + 1) * c], &dy[i * c..(i + 1) * c], rstd[i]);
        let mut gn = F::zero();
        for j in 0..c {
            gn += w[j] * dyr[j] * xr[j] * rs;
        }
        let gn = gn / cn;
        for j in 0..c {
            dxr[j] = (w[j] * dyr[j] - xr[j] * rs * gn) * rs;
        }
    };
    if dx.len() >= super::elementwise::PAR_MIN {
        dx.par_chunks_mut(c).enumerate().for_each(row);
    } else {
        dx.chunks_mut(c).enumerate().for_each(row);
    }
    dw.fill(F::zero());
    for (i, (xr, dyr)) in x.chunks(c).zip(dy.chunks(c)).enumerate() {
        for j in 0..c {
            dw[j] += xr[j] * rstd[i] * dyr[j];
        }
    }
}

/// Runs [`Op::RmsNorm`] (outputs `y`, `rstd`) or [`Op::RmsNormBackward`]
/// (outputs `dx`, `dw`).
pub(super) fn run<F: Real>(op: &Op, a: &[In<F>], o: &mut [&mut [F]]) -> Result<()> {
    let n = op.name();
    match op {
        Op::RmsNorm { eps, .. } => {
            let [y, rstd] = o else {
                return Err(Error::Internal("rmsnorm outputs".into()));
            };
            rmsnorm_forward(a[0].f(n)?, a[1].f(n)?, y, rstd, *eps)
        }
        Op::RmsNormBackward => {
            let [dx, dw] = o else {
                return Err(Error::Internal("rmsnorm_backward outputs".into()));
            };
            rmsnorm_backward(a[0].f(n)?, a[1].f(n)?, a[2].f(n)?, a[3].f(n)?, dx, dw)
        }
        _ => return Err(misrouted(op)),
    }
    Ok(())
}
