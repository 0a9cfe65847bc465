//! Automatic mixed precision. While a forward pass is recorded with a low
//! precision set, every op's float operands are cast as its [`CastRule`] in the
//! op table ([`Op::spec`](super::Op::spec), kept in one place as PyTorch keeps
//! its autocast lists) says, with explicit `Cast` nodes (so the planner counts
//! them and recompute can drop them). Autodiff then differentiates through the casts: gradients come back to
//! the f32 master weights in f32. The backward pass records no new casts.
//!
//! Casts of one value are recorded once per graph, so each f32 weight gets one
//! low-precision copy per step, not one per use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ops::mixed;
use super::Op;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// The training precision a user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    /// Everything in f32: autocast stays off.
    F32,
    /// bf16 activations under autocast, f32 master weights; no loss scaling.
    Bf16,
    /// f16 with dynamic loss scaling.
    F16,
    /// The backend's best: bf16 where it has fast bf16, else f16, else f32.
    Auto,
}

impl Precision {
    /// The low-precision dtype of activations, `None` for f32.
    pub fn low_dtype(self) -> Option<DType> {
        match self {
            Precision::Bf16 => Some(DType::BF16),
            Precision::F16 => Some(DType::F16),
            Precision::F32 | Precision::Auto => None,
        }
    }

    /// Resolves `Auto` for a backend whose preferred low precision is `preferred`.
    pub fn resolve(self, preferred: Option<DType>) -> Precision {
        match (self, preferred) {
            (Precision::Auto, Some(DType::BF16)) => Precision::Bf16,
            (Precision::Auto, Some(DType::F16)) => Precision::F16,
            (Precision::Auto, _) => Precision::F32,
            (p, _) => p,
        }
    }

    /// Whether training in this precision needs a loss scaler.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::Auto => "auto",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            "auto" => Ok(Precision::Auto),
            _ => Err(Error::invalid(
                "TrainConfig::precision",
                format!("'{s}'; choose f32, bf16, f16 or auto"),
            )),
        }
    }
}

/// What autocast does with an op's float operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastRule {
    /// Tensor-core ops: operands in low precision (accumulation stays f32 inside
    /// the kernel).
    Low,
    /// Numerically sensitive ops: operands in f32.
    F32,
    /// Norms: operands in f32 (the statistics need it), the output in low
    /// precision, written by the kernel for the matmul that reads it, so no
    /// cast follows ([`with_low_output`] sets it on the op).
    F32LowOut,
    /// Elementwise ops: the other operands follow the first (the activation), so a
    /// bias add after a low-precision matmul stays low while the f32 residual
    /// stream stays f32.
    FollowFirst,
    /// The residual add: as `FollowFirst`, except that a low-precision second
    /// operand next to an f32 first stays low (the kernel widens it; the
    /// result is f32), so a projection joins the f32 stream with no cast.
    Residual,
    /// Leave the operands alone.
    Keep,
}

/// `op` writing its main output in `low`, as [`CastRule::F32LowOut`] asks; ops
/// of other rules unchanged.
pub(crate) fn with_low_output(op: Op, low: DType) -> Op {
    match op {
        Op::LayerNorm { eps, .. } => Op::LayerNorm {
            eps,
            out: Some(low),
        },
        Op::RmsNorm { eps, .. } => Op::RmsNorm {
            eps,
            out: Some(low),
        },
        op => op,
    }
}

/// The dtype each float operand should have under `rule`, given the operands'
/// dtypes and the low-precision dtype; `None` leaves an operand as it is.
pub fn target_dtypes(rule: CastRule, dtypes: &[DType], low: DType) -> Vec<Option<DType>> {
    let first_float = dtypes.iter().copied().find(|d| d.is_float());
    dtypes
        .iter()
        .map(|&d| {
            if !d.is_float() {
                return None;
            }
            let want = match rule {
                CastRule::Low => low,
                CastRule::F32 | CastRule::F32LowOut => DType::F32,
                CastRule::FollowFirst => first_float.unwrap_or(d),
                CastRule::Residual => match first_float {
                    Some(f) if mixed(f, d) => d,
                    f => f.unwrap_or(d),
                },
                CastRule::Keep => d,
            };
            (want != d).then_some(want)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(op: &Op) -> CastRule {
        op.cast_rule()
    }

    #[test]
    fn auto_resolves_by_backend() {
        assert_eq!(Precision::Auto.resolve(Some(DType::BF16)), Precision::Bf16);
        assert_eq!(Precision::Auto.resolve(Some(DType::F16)), Precision::F16);
        assert_eq!(Precision::Auto.resolve(None), Precision::F32);
        assert_eq!(Precision::F16.resolve(Some(DType::BF16)), Precision::F16);
    }

    #[test]
    fn the_table_casts_as_documented() {
        use DType::*;
        let mm = rule(&Op::MatMul {
            ta: false,
            tb: false,
        });
        assert_eq!(
            target_dtypes(mm, &[F32, F32], BF16),
            vec![Some(BF16), Some(BF16)]
        );
        let ln = Op::LayerNorm {
            eps: 1e-5,
            out: None,
        };
        assert_eq!(
            target_dtypes(rule(&ln), &[BF16, F32, F32], BF16),
            vec![Some(F32), None, None]
        );
        assert_eq!(
            with_low_output(ln, BF16),
            Op::LayerNorm {
                eps: 1e-5,
                out: Some(BF16)
            }
        );
        // A bias after a low matmul follows it; a low projection added to the
        // f32 residual stream stays low (the add widens it).
        let add = rule(&Op::Add);
        assert_eq!(
            target_dtypes(add, &[BF16, F32], BF16),
            vec![None, Some(BF16)]
        );
        assert_eq!(target_dtypes(add, &[F32, BF16], BF16), vec![None, None]);
        assert_eq!(target_dtypes(add, &[F32, F16], F16), vec![None, None]);
        assert_eq!(
            target_dtypes(add, &[F64, BF16], BF16),
            vec![None, Some(F64)]
        );
        let mul = rule(&Op::Mul);
        assert_eq!(
            target_dtypes(mul, &[F32, BF16], BF16),
            vec![None, Some(F32)]
        );
        let ce = rule(&Op::CrossEntropy { classes: 1 });
        assert_eq!(target_dtypes(ce, &[F16, I32], F16), vec![None, None]);
    }
}
