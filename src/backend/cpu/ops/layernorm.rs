//! LayerNorm on the cpu: rows in parallel, the weight and bias gradients summed
//! in row order.

use rayon::prelude::*;

use super::misrouted;
use crate::backend::cpu::kernel::{In, Real};
use crate::backend::cpu::simd::wide;
use crate::error::{Error, Result};
use crate::graph::ops::Op;

/// Each row of `x` normalised with its mean and biased variance, then
/// `y = norm · w + b`; saves the row's mean and `rstd = 1 / √(var + eps)`.
pub fn layernorm_forward<F: Real>(
    x: &[F],        // [N, C]
    w: &[F],        // [C]
    b: &[F],        // [C]
    y: &mut [F],    // [N, C]
    mean: &mut [F], // [N]
    rstd: &mut [F], // [N]
    eps: f64,
) {
    let c = w.len();
    let cn = F::c(c as f64);
    let eps = F::c(eps);
    type Row<'a, F> = ((&'a mut [F], &'a [F]), (&'a mut F, &'a mut F));
    let row = |((yr, xr), (m, r)): Row<F>| {
        wide(
            #[inline(always)]
            || {
                let mu = xr.iter().copied().sum::<F>() / cn;
                let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<F>() / cn;
                let rs = F::one() / (var + eps).sqrt();
                for i in 0..c {
                    yr[i] = (xr[i] - mu) * rs * w[i] + b[i];
                }
                *m = mu;
                *r = rs;
            },
        )
    };
    if y.len() >= super::elementwise::PAR_MIN {
        y.par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
            .for_each(row);
    } else {
        y.chunks_mut(c)
            .zip(x.chunks(c))
            .zip(mean.iter_mut().zip(rstd.iter_mut()))
            .for_each(row);
    }
}

/// Gradients of [`layernorm_forward`] from the saved mean and rstd. `dw` and
/// `db` are summed in row order, so they do not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<F: Real>(
    dy: &[F],     // [N, C]
    x: &[F],      // [N, C]
    w: &[F],      // [C]
    mean: &[F],   // [N]
    rstd: &[F],   // [N]
    dx: &mut [F], // [N, C]
    dw: &mut [F], // [C]
    db: &mut [F], // [C]
) {
    let c = w.len();
    let cn = F::c(c as f64);
    // dx rows are independent; dw/db are column sums, taken in row order below so
    // the result does not depend on thread count.
    let row = |(i, dxr): (usize, &mut [F])| {
        wide(
            #[inline(always)]
            || {
                let (xr, dyr) = (&x[i * c..(i + 1) * c], &dy[i * c..(i + 1) * c]);
                let (mu, rs) = (mean[i], rstd[i]);
                let mut dnorm_mean = F::zero();
                let mut dnorm_norm_mean = F::zero();
                for j in 0..c {
                    let norm = (xr[j] - mu) * rs;
                    let dnorm = w[j] * dyr[j];
                    dnorm_mean += dnorm;
                    dnorm_norm_mean += dnorm * norm;
                }
                dnorm_mean = dnorm_mean / cn;
                dnorm_norm_mean = dnorm_norm_mean / cn;
                for j in 0..c {
                    let norm = (xr[j] - mu) * rs;
                    let dnorm = w[j] * dyr[j];
                    dxr[j] = (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rs;
                }
            },
        )
    };
    if dx.len() >= super::elementwise::PAR_MIN {
        dx.par_chunks_mut(c).enumerate().for_each(row);
    } else {
        dx.chunks_mut(c).enumerate().for_each(row);
    }
    dw.fill(F::zero());
    db.fill(F::zero());
    wide(
        #[inline(always)]
        || {
            for (i, (xr, dyr)) in x.chunks(c).zip(dy.chunks(c)).enumerate() {
                for j in 0..c {
                    let norm = (xr[j] - mean[i]) * rstd[i];
                    dw[j] += norm * dyr[j];
                    db[j] += dyr[j];
                }
            }
        },
    );
}

/// Runs [`Op::LayerNorm`] (outputs `y`, `mean`, `rstd`) or
/// [`Op::LayerNormBackward`] (outputs `dx`, `dw`, `db`).
pub(super) fn run<F: Real>(op: &Op, a: &[In<F>], o: &mut [&mut [F]]) -> Result<()> {
    let n = op.name();
    match op {
        Op::LayerNorm { eps, .. } => {
            let [y, mean, rstd] = o else {
                return Err(Error::Internal("layernorm outputs".into()));
            };
            layernorm_forward(a[0].f(n)?, a[1].f(n)?, a[2].f(n)?, y, mean, rstd, *eps)
        }
        Op::LayerNormBackward => {
            let [dx, dw, db] = o else {
                return Err(Error::Internal("layernorm_backward outputs".into()));
            };
            layernorm_backward(
                a[0].f(n)?,
                a[1].f(n)?,
                a[2].f(n)?,
                a[3].f(n)?,
                a[4].f(n)?,
                dx,
                dw,
                db,
            )
        }
        _ => return Err(misrouted(op)),
    }
    Ok(())
}
