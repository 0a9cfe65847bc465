//! Dynamic loss scaling for f16: PyTorch's GradScaler defaults plus DeepSpeed's
//! hysteresis and floor.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Dynamic loss scale for f16 training. The trainer multiplies the loss (so
/// every gradient) by `scale` and divides the gradients by it again in the AdamW
/// step; [`LossScaler::update`] backs the scale off after overflows and grows
/// it after a run of clean steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current factor (65536 by default).
    pub scale: f64,
    /// Multiplies `scale` after `growth_interval` clean steps in a row (2 by default).
    pub growth_factor: f64,
    /// Multiplies `scale` after `hysteresis` overflows in a row (0.5 by default).
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows.
    pub growth_interval: u32,
    /// Overflows in a row before the scale backs off (DeepSpeed's hysteresis).
    pub hysteresis: u32,
    /// Below this the run stops with an error instead of scaling towards zero.
    pub min_scale: f64,
    /// Clean steps since the last change of scale.
    pub clean_in_row: u32,
    /// Overflowing steps in a row not yet backed off for.
    pub overflows_in_row: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            hysteresis: 2,
            min_scale: 1.0,
            clean_in_row: 0,
            overflows_in_row: 0,
        }
    }
}

impl LossScaler {
    /// Records a step's outcome: `overflow` means its gradients held inf or NaN
    /// (and the step was skipped).
    pub fn update(&mut self, overflow: bool, step: u64) -> Result<()> {
        if overflow {
            self.clean_in_row = 0;
            self.overflows_in_row += 1;
            if self.overflows_in_row >= self.hysteresis.max(1) {
                self.overflows_in_row = 0;
                let next = self.scale * self.backoff_factor;
                if next < self.min_scale {
                    return Err(Error::LossScaleFloor {
                        step,
                        scale: next,
                        floor: self.min_scale,
                    });
                }
                self.scale = next;
            }
        } else {
            self.overflows_in_row = 0;
            self.clean_in_row += 1;
            if self.clean_in_row >= self.growth_interval {
                self.clean_in_row = 0;
                self.scale *= self.growth_factor;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_only_after_the_hysteresis() {
        let mut s = LossScaler::default();
        s.update(true, 1).unwrap();
        assert_eq!(s.scale, 65536.0, "one overflow: skipped, scale kept");
        s.update(true, 2).unwrap();
        assert_eq!(s.scale, 32768.0, "second in a row: halved");
        s.update(true, 3).unwrap();
        s.update(false, 4).unwrap();
        s.update(true, 5).unwrap();
        assert_eq!(s.scale, 32768.0, "a clean step in between resets the count");
    }

    #[test]
    fn grows_after_the_interval() {
        let mut s = LossScaler {
            growth_interval: 3,
            ..LossScaler::default()
        };
        for i in 0..3 {
            s.update(false, i).unwrap();
        }
        assert_eq!(s.scale, 131072.0);
        s.update(false, 4).unwrap();
        assert_eq!(s.scale, 131072.0);
    }

    #[test]
    fn stops_at_the_floor() {
        let mut s = LossScaler {
            scale: 2.0,
            hysteresis: 1,
            ..LossScaler::default()
        };
        s.update(true, 1).unwrap();
        assert_eq!(s.scale, 1.0);
        let e = s.update(true, 2).unwrap_err();
        assert!(e.to_string().contains("loss scale"), "{e}");
    }
}
