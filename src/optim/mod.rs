//! AdamW (decoupled weight decay), global-norm clipping and the LR schedule;
//! `quant` holds the 8-bit form of its state.

pub mod quant;

use serde::{Deserialize, Serialize};

use crate::backend::AdamWStep;
use crate::error::{Error, Result};

/// AdamW hyper-parameters. The moments themselves live on the device beside each
/// parameter; the backend applies the update.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// Peak learning rate: the trainer's [`LrSchedule`] warms up to it and decays
    /// from it.
    pub lr: f64,
    /// Decay rate of the first-moment (mean) estimate.
    pub beta1: f64,
    /// Decay rate of the second-moment (uncentred variance) estimate.
    pub beta2: f64,
    /// Added to `√v̂` in the update's denominator.
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies a parameter by
    /// `1 − lr · weight_decay`, for parameters whose
    /// [`ParamSpec::decays`](crate::nn::ParamSpec::decays) is true.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub grad_clip: Option<f64>,
}

impl AdamW {
    /// [`Error::InvalidArgument`] unless the learning rate is a positive number.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(
                "AdamW::lr",
                format!("{} must be a positive number", self.lr),
            ));
        }
        Ok(())
    }

    /// GPT-2/nanoGPT settings with peak learning rate `lr`.
    pub fn new(lr: f64) -> AdamW {
        AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: Some(1.0),
        }
    }

    /// The factor that brings a gradient of norm `norm` within the clip.
    pub fn clip_scale(&self, norm: f64) -> f64 {
        match self.grad_clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        }
    }

    /// The backend's arguments for the update at 1-based step `t` with learning rate
    /// `lr`; `grad_scale` multiplies every gradient first (the trainer passes the
    /// clip factor divided by the loss scale).
    pub fn step_args(&self, lr: f64, t: u64, grad_scale: f64) -> AdamWStep {
        AdamWStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            t,
            grad_scale,
        }
    }
}

/// Linear warmup to the peak, then cosine decay to `min_ratio` × peak.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Learning rate at the end of warmup.
    pub peak: f64,
    /// Warmup steps: step `s < warmup` gets `peak · (s + 1) / warmup`.
    pub warmup: u64,
    /// The step at which the cosine reaches `min_ratio · peak`; later steps stay
    /// there.
    pub total: u64,
    /// Final learning rate as a fraction of `peak`.
    pub min_ratio: f64,
}

impl LrSchedule {
    /// Learning rate of the 0-based step `s`.
    pub fn at(&self, s: u64) -> f64 {
        let min = self.peak * self.min_ratio;
        if s < self.warmup {
            return self.peak * (s + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let p = ((s - self.warmup) as f64 / span as f64).min(1.0);
        min + 0.5 * (self.peak - min) * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = LrSchedule {
            peak: 1.0,
            warmup: 10,
            total: 110,
            min_ratio: 0.1,
        };
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((s.at(9) - 1.0).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(60) - 0.55).abs() < 1e-12);
        assert!((s.at(110) - 0.1).abs() < 1e-12);
        assert!((s.at(1000) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn clipping_only_shrinks() {
        let a = AdamW::new(1e-3);
        assert_eq!(a.clip_scale(0.5), 1.0);
        assert!((a.clip_scale(4.0) - 0.25).abs() < 1e-12);
    }
}
