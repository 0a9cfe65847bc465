//! What to train and how: the configuration the trainer runs and the planner
//! plans for. Its own module, so that neither depends on the other for it.

use crate::error::{Error, Result};
use crate::graph::amp::Precision;
use crate::memory::format_bytes;
pub use crate::schedule::levers::OptimizerState;

/// The most tokens one step may hold (2^31). GPT-2's largest published step is
/// 2^19 tokens; a step past this is a typo, and its token and target batches
/// alone would need 16 GiB of host memory.
pub const MAX_TOKENS_PER_STEP: usize = 1 << 31;

/// What to train and how: the batch, the run's length and schedule, precision.
/// Memory decisions (micro-batch, recompute) are the planner's, not set here.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Sequences per optimizer step (the planner may split it into micro-batches).
    pub batch: usize,
    /// Tokens per sequence; at most the model's context.
    pub seq_len: usize,
    /// Optimizer steps in the run (the LR schedule spans them).
    pub steps: u64,
    /// Warmup steps; `None`: a tenth of the run, at most 200.
    pub warmup: Option<u64>,
    /// The LR decays to this fraction of its peak.
    pub min_lr_ratio: f64,
    /// Weights, batches and sampling all derive from it.
    pub seed: u64,
    /// Batches of validation data per evaluation.
    pub eval_batches: usize,
    /// Re-plan and retry inside a step when memory runs out.
    pub recover: bool,
    /// Activation precision; `Auto` is resolved against the device.
    pub precision: Precision,
    /// Library workspace to reserve at setup (the device's own request when
    /// larger); the planner passes it to its simulations.
    pub workspace_bytes: u64,
    /// Under autocast, keep a low-precision copy of each weight the forward
    /// casts, rewritten by AdamW, so no weight is cast per step (2 bytes per
    /// parameter held for the run). The planner turns it off where it costs
    /// a cheaper plan or any plan at all.
    pub weight_copies: bool,
    /// The AdamW moments' precision: f32, 8-bit, or the planner's choice
    /// (8-bit only where no f32 plan fits).
    pub optimizer_state: OptimizerState,
    /// The planner may keep AdamW's moments in the host pool when that is
    /// what makes a plan fit (or the fastest that fits).
    pub offload: bool,
    /// The planner may update each parameter inside the backward and free
    /// its gradient at once, where that is legal
    /// ([`crate::schedule::levers::release_blocked`]).
    pub gradient_release: bool,
    /// Bytes the host pool (offloaded state) may hold; `None`:
    /// [`crate::memory::host::DEFAULT_HOST_SHARE`] of the host memory
    /// available when planned.
    pub host_budget_bytes: Option<u64>,
    /// The GPU the time model prices plans for ([`crate::schedule::gpus`]);
    /// `None`: the device's own where known, else a default.
    pub gpu: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch: 32,
            seq_len: 64,
            steps: 300,
            warmup: None,
            min_lr_ratio: 0.1,
            seed: 1,
            eval_batches: 8,
            recover: true,
            precision: Precision::Auto,
            workspace_bytes: 0,
            weight_copies: true,
            optimizer_state: OptimizerState::F32,
            offload: true,
            gradient_release: true,
            host_budget_bytes: None,
            gpu: None,
        }
    }
}

impl TrainConfig {
    /// The host pool's budget in bytes: [`TrainConfig::host_budget_bytes`],
    /// or the default share of what the host has available now.
    pub fn host_budget(&self) -> Option<u64> {
        Some(self.host_budget_bytes.unwrap_or_else(|| {
            crate::memory::host::default_host_budget(crate::backend::cpu::host_available_bytes())
        }))
    }

    /// [`Error::InvalidArgument`] naming the setting, for a zero batch,
    /// sequence, step count or eval batch count, a sequence longer than
    /// `block_size`, or a step of more than [`MAX_TOKENS_PER_STEP`] tokens.
    pub fn validate(&self, block_size: usize) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::invalid("TrainConfig::batch", "must be at least 1"));
        }
        if self.seq_len == 0 {
            return Err(Error::invalid("TrainConfig::seq_len", "must be at least 1"));
        }
        if self.seq_len > block_size {
            return Err(Error::invalid(
                "TrainConfig::seq_len",
                format!(
                    "{} is longer than the model's context of {block_size} tokens; use TrainConfig::seq_len {block_size} or less",
                    self.seq_len
                ),
            ));
        }
        let tokens = self.batch.checked_mul(self.seq_len);
        if tokens.is_none_or(|n| n > MAX_TOKENS_PER_STEP) {
            return Err(Error::invalid(
                "TrainConfig::batch",
                format!(
                    "{} sequences × {} tokens is more than the {MAX_TOKENS_PER_STEP} tokens a step may hold (2^31; GPT-2 trained on 2^19 per step); lower TrainConfig::batch",
                    self.batch, self.seq_len
                ),
            ));
        }
        if self.steps == 0 {
            return Err(Error::invalid("TrainConfig::steps", "must be at least 1"));
        }
        if self.eval_batches == 0 {
            return Err(Error::invalid("eval_batches", "must be at least 1"));
        }
        Ok(())
    }

    /// Host bytes one batch of this shape takes while a step runs: tokens and
    /// targets (i32 each), and the copy the micro-batch being uploaded makes.
    pub fn host_batch_bytes(&self) -> u64 {
        (self.batch as u64)
            .saturating_mul(self.seq_len as u64)
            .saturating_mul(16)
    }

    /// [`Error::InvalidArgument`] when one batch would not fit in half the host
    /// memory available now: checked before any weight is placed, so a typo in
    /// the batch size fails at once instead of when the allocator aborts.
    pub fn check_host_memory(&self) -> Result<()> {
        let need = self.host_batch_bytes();
        let available = crate::backend::cpu::host_available_bytes();
        if need > available / 2 {
            return Err(Error::invalid(
                "TrainConfig::batch",
                format!(
                    "a batch of {} × {} tokens takes {} of host memory, and {} is available; lower TrainConfig::batch",
                    self.batch,
                    self.seq_len,
                    format_bytes(need),
                    format_bytes(available)
                ),
            ));
        }
        Ok(())
    }
}
