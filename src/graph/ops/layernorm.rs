//! LayerNorm over the last dim, with the mean and reciprocal std saved for backward.

use rayon::prelude::*;

use super::{same_float, stat_dtype, Meta, Real};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Value};
use crate::tensor::{DType, Shape};

/// `x [.., C]`, `w [C]`, `b [C]` → `y [.., C]`, `mean [..]`, `rstd [..]`.
pub fn infer(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("layernorm", ins)?;
    let x = ins[0].0;
    let c = Shape(vec![x.last()]);
    if x.rank() == 0 || ins[1].0 != &c || ins[2].0 != &c {
        return Err(Error::shape(
            "layernorm",
            format!(
                "x {x} needs weight and bias of shape {c}, got {} and {}",
                ins[1].0, ins[2].0
            ),
        ));
    }
    let rows = Shape(x.dims()[..x.rank() - 1].to_vec());
    Ok(vec![
        (x.clone(), dt),
        (rows.clone(), stat_dtype(dt)),
        (rows, stat_dtype(dt)),
    ])
}

/// `dy, x [.., C]`, `w [C]`, `mean, rstd [..]` → `dx [.., C]`, `dw [C]`, `db [C]`.
pub fn infer_backward(ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
    let dt = same_float("layernorm_backward", &ins[..3])?;
    let x = ins[1].0;
    if ins[0].0 != x {
        return Err(Error::shape(
            "layernorm_backward",
            "dy and x differ in shape",
        ));
    }
    let c = Shape(vec![x.last()]);
    Ok(vec![(x.clone(), dt), (c.clone(), dt), (c, dt)])
}

/// Records [`Op::LayerNormBackward`] from `dy`, the input, the weight and the
/// saved mean and rstd; gives the gradients of `x`, `w` and `b`.
pub fn vjp(g: &mut Graph, ins: &[Value], outs: &[Value], dy: Value) -> Result<Vec<Option<Value>>> {
    let r = g.apply(
        Op::LayerNormBackward,
        &[dy, ins[0], ins[1], outs[1], outs[2]],
    )?;
    Ok(vec![Some(r[0]), Some(r[1]), Some(r[2])])
}

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
        let mu = xr.iter().copied().sum::<F>() / cn;
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<F>() / cn;
        let rs = F::one() / (var + eps).sqrt();
        for i in 0..c {
            yr[i] = (xr[i] - mu) * rs * w[i] + b[i];
        }
        *m = mu;
        *r = rs;
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
    };
    if dx.len() >= super::elementwise::PAR_MIN {
        dx.par_chunks_mut(c).enumerate().for_each(row);
    } else {
        dx.chunks_mut(c).enumerate().for_each(row);
    }
    dw.fill(F::zero());
    db.fill(F::zero());
    for (i, (xr, dyr)) in x.chunks(c).zip(dy.chunks(c)).enumerate() {
        for j in 0..c {
            let norm = (xr[j] - mean[i]) * rstd[i];
            dw[j] += norm * dyr[j];
            db[j] += dyr[j];
        }
    }
}
