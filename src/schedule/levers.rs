//! The levers past the model-state floor: where AdamW's moments live (the
//! device or the host pool), how they are stored (f32 or 8-bit), and whether
//! each parameter is updated inside the backward so its gradient is freed at
//! once. A plan picks a [`Levers`] with its micro-batch and recompute policy.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::graph::amp::Precision;
use crate::optim::AdamW;

/// What the user allows for the optimizer state's precision
/// (`--optimizer-state`, [`TrainConfig::optimizer_state`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OptimizerState {
    /// f32 moments (exact AdamW).
    #[default]
    F32,
    /// 8-bit moments ([`crate::optim::quant`]) always.
    Q8,
    /// f32 where a plan fits with it, else 8-bit: the planner decides.
    Auto,
}

impl OptimizerState {
    /// Parses `f32`, `8bit` or `auto`.
    pub fn parse(s: &str) -> Option<OptimizerState> {
        match s {
            "f32" => Some(OptimizerState::F32),
            "8bit" | "q8" => Some(OptimizerState::Q8),
            "auto" => Some(OptimizerState::Auto),
            _ => None,
        }
    }

    /// The formats a plan may use, preferred first.
    pub fn allowed(self) -> &'static [bool] {
        match self {
            OptimizerState::F32 => &[false],
            OptimizerState::Q8 => &[true],
            OptimizerState::Auto => &[false, true],
        }
    }
}

impl fmt::Display for OptimizerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimizerState::F32 => "f32",
            OptimizerState::Q8 => "8bit",
            OptimizerState::Auto => "auto",
        })
    }
}

/// Where the model state lives and when it is updated. Serialised as the
/// list of the chosen levers' names (`["offload-optimizer"]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "Vec<String>", try_from = "Vec<String>")]
pub struct Levers {
    /// AdamW's moments live in the host pool; the update streams them
    /// through a small device window, chunk by chunk.
    pub offload_optimizer: bool,
    /// AdamW's moments are stored in 8 bits with block scales (tensors under
    /// [`crate::optim::quant::Q8_MIN_NUMEL`] elements keep f32).
    pub state_8bit: bool,
    /// Each parameter is updated as soon as its gradient is final, inside
    /// the backward, and the gradient freed: no step holds every gradient.
    pub gradient_release: bool,
}

impl Levers {
    /// The chosen levers by name (`plan --json`'s `levers`); empty: none.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.offload_optimizer {
            v.push("offload-optimizer");
        }
        if self.state_8bit {
            v.push("8bit-state");
        }
        if self.gradient_release {
            v.push("gradient-release");
        }
        v
    }

    /// Where the state is placed: what [`crate::schedule::state::ModelState`]
    /// needs (the update's timing is the runner's).
    pub fn placement(&self) -> Placement {
        Placement {
            host: self.offload_optimizer,
            q8: self.state_8bit,
        }
    }

    /// Every lever set a plan for `cfg` may use, in the order of preference
    /// at equal predicted time (exact state before quantised, the device
    /// before the host).
    pub fn candidates(cfg: &TrainConfig, opt: &AdamW) -> Vec<Levers> {
        let release: &[bool] = match release_blocked(cfg, opt) {
            None if cfg.gradient_release => &[false, true],
            _ => &[false],
        };
        let offload: &[bool] = if cfg.offload {
            &[false, true]
        } else {
            &[false]
        };
        let mut out = Vec::new();
        for &q8 in cfg.optimizer_state.allowed() {
            for &host in offload {
                for &gr in release {
                    out.push(Levers {
                        offload_optimizer: host,
                        state_8bit: q8,
                        gradient_release: gr,
                    });
                }
            }
        }
        out
    }
}

impl From<Levers> for Vec<String> {
    fn from(l: Levers) -> Vec<String> {
        l.names().into_iter().map(String::from).collect()
    }
}

impl TryFrom<Vec<String>> for Levers {
    type Error = String;
    fn try_from(names: Vec<String>) -> Result<Levers, String> {
        let mut l = Levers::default();
        for n in names {
            match n.as_str() {
                "offload-optimizer" => l.offload_optimizer = true,
                "8bit-state" => l.state_8bit = true,
                "gradient-release" => l.gradient_release = true,
                other => return Err(format!("unknown lever '{other}'")),
            }
        }
        Ok(l)
    }
}

impl fmt::Display for Levers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.names();
        if n.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&n.join("+"))
        }
    }
}

/// Where AdamW's moments are placed and in which format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Placement {
    /// In the host pool (else on the device).
    pub host: bool,
    /// 8-bit (else f32).
    pub q8: bool,
}

/// Why gradient release cannot be used for `cfg` with `opt`, or `None` when
/// it can (for a step of one micro-batch: with several, every micro-batch
/// but the last adds into gradients an update must not have consumed).
pub fn release_blocked(cfg: &TrainConfig, opt: &AdamW) -> Option<&'static str> {
    if opt.grad_clip.is_some() {
        return Some(
            "global-norm clipping (AdamW::grad_clip) needs every gradient before the first update; set it to None (--grad-clip 0) to allow gradient release",
        );
    }
    if cfg.precision == Precision::F16 {
        return Some(
            "f16's loss scaler may skip a step after its gradients are known, when release has already applied them; use bf16",
        );
    }
    None
}
