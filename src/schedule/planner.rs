//! The planner: for each candidate (micro-batch × recompute policy) it lowers
//! the step and runs it through the real caching allocator over a simulated
//! device, so the predicted peak is the allocator's own behaviour, not a formula.
//! It picks the cheapest candidate (FLOPs, recompute counted) that fits.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::recompute::Recompute;
use super::simulate::simulate_with;
pub use super::simulate::{simulate, simulated_trace, Breakdown, Simulated};
pub use super::step::Choice;
use super::step::StepCompiler;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::memory::format_bytes;
use crate::nn::Model;
use crate::optim::AdamW;

/// One candidate the planner considered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The candidate's micro-batch size.
    pub micro_batch: usize,
    /// The candidate's recompute policy.
    pub recompute: Recompute,
    /// FLOPs of a whole step (all micro-batches, recompute included).
    pub flops: u64,
    /// Simulated peak reserved bytes under the budget; `None`: not simulated
    /// (a cheaper candidate already fitted) or out of memory in simulation.
    pub peak_bytes: Option<u64>,
    /// `None`: not simulated.
    pub fits: Option<bool>,
}

/// The planner's decision for one step shape under a budget, with the
/// candidates it weighed. `Display` prints the candidates that were simulated
/// (those that decided it) as a table; the alternate form (`{:#}`) lists every
/// candidate, the untried ones too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Sequences per optimizer step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// The precision the step runs in.
    pub precision: crate::graph::amp::Precision,
    /// The chosen micro-batch size.
    pub micro_batch: usize,
    /// The chosen recompute policy.
    pub recompute: Recompute,
    /// The budget planned against, in bytes.
    pub budget_bytes: u64,
    /// Peak reserved bytes of the chosen candidate in simulation.
    pub predicted_peak_bytes: u64,
    /// FLOPs of one step of the chosen candidate, recompute included.
    pub flops_per_step: u64,
    /// What the chosen candidate's peak holds.
    pub breakdown: Breakdown,
    /// The candidates in the order tried, cheapest first; those after the
    /// chosen one were never simulated.
    pub candidates: Vec<Candidate>,
    /// Whether the weights keep low-precision copies
    /// ([`TrainConfig::weight_copies`]): off where they would cost a cheaper
    /// plan, or where no plan fits with them.
    #[serde(default)]
    pub weight_copies: bool,
}

impl Plan {
    /// The chosen micro-batch size and recompute policy.
    pub fn choice(&self) -> Choice {
        Choice {
            micro_batch: self.micro_batch,
            recompute: self.recompute,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan for batch {} × {} tokens, {}, budget {}:",
            self.batch,
            self.seq,
            self.precision,
            format_bytes(self.budget_bytes)
        )?;
        writeln!(
            f,
            "  {:>11}  {:<16} {:>12}  {:>14}  fits",
            "micro-batch", "recompute", "GFLOP/step", "peak"
        )?;
        // The candidates that decided the plan are those simulated; the rest
        // cost more and were never tried. `{:#}` lists them all.
        let untried = self.candidates.iter().filter(|c| c.fits.is_none()).count();
        for c in &self.candidates {
            if c.fits.is_none() && !f.alternate() {
                continue;
            }
            let chosen = c.micro_batch == self.micro_batch && c.recompute == self.recompute;
            writeln!(
                f,
                "{} {:>11}  {:<16} {:>12.1}  {:>14}  {}",
                if chosen { "→" } else { " " },
                c.micro_batch,
                c.recompute.to_string(),
                c.flops as f64 / 1e9,
                c.peak_bytes.map_or("-".into(), format_bytes),
                match c.fits {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "(not tried)",
                }
            )?;
        }
        if untried > 0 && !f.alternate() {
            writeln!(
                f,
                "  ({untried} costlier candidates not simulated; {{:#}} lists them)"
            )?;
        }
        writeln!(
            f,
            "  chosen: micro-batch {}, recompute {}; predicted peak {} ({})",
            self.micro_batch,
            self.recompute,
            format_bytes(self.predicted_peak_bytes),
            self.breakdown.summary()
        )?;
        if self.precision.low_dtype().is_some() && !self.weight_copies {
            writeln!(
                f,
                "  weights are cast every step: their {} copies would cost a cheaper plan",
                self.precision
            )?;
        }
        Ok(())
    }
}

/// FLOPs of one step of `cfg.batch` under `choice`, recompute included.
pub fn step_flops(model: &dyn Model, cfg: &TrainConfig, choice: Choice) -> Result<u64> {
    StepCompiler::new(cfg.precision).step_flops(model, cfg.batch, cfg.seq_len, choice)
}

/// Plans a step of `cfg.batch × cfg.seq_len` within `budget` bytes, with
/// micro-batches from `micro_batches` (divisors of the batch; empty: all).
/// Weight copies ([`TrainConfig::weight_copies`]) save a cast per weight per
/// step, about 1% of a step, while they hold 2 bytes per parameter: where
/// they keep the cheapest candidate from fitting, the plan without them is
/// taken if it is cheaper, and where no plan fits with them, it is the one.
pub fn plan(
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    budget: u64,
    micro_batches: &[usize],
) -> Result<Plan> {
    let copies = cfg.weight_copies && cfg.precision.low_dtype().is_some();
    let with = plan_for(model, opt, cfg, budget, micro_batches);
    let cheapest_fits =
        matches!(&with, Ok(p) if p.candidates.first().is_some_and(|c| c.fits == Some(true)));
    if !copies || cheapest_fits {
        return with;
    }
    let plain = TrainConfig {
        weight_copies: false,
        ..cfg.clone()
    };
    let without = plan_for(model, opt, &plain, budget, micro_batches);
    match (with, without) {
        (Ok(w), Ok(wo)) if wo.flops_per_step < w.flops_per_step => Ok(wo),
        (Ok(w), _) => Ok(w),
        (Err(_), without) => without,
    }
}

fn plan_for(
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    budget: u64,
    micro_batches: &[usize],
) -> Result<Plan> {
    cfg.validate(model.block_size())?;
    let b = cfg.batch;
    let mbs: Vec<usize> = if micro_batches.is_empty() {
        (1..=b).rev().filter(|m| b % m == 0).collect()
    } else {
        micro_batches
            .iter()
            .copied()
            .filter(|m| *m > 0 && b % m == 0)
            .collect()
    };
    // One compiler for every candidate: each distinct graph is traced once,
    // whatever the recompute policies lowered from it.
    let mut compiler = StepCompiler::new(cfg.precision);
    let n_blocks = compiler.count_blocks(model, cfg.seq_len)?;
    let mut cands: Vec<Candidate> = Vec::new();
    for &mb in &mbs {
        for pol in Recompute::candidates(n_blocks) {
            let choice = Choice {
                micro_batch: mb,
                recompute: pol,
            };
            let flops = compiler.step_flops(model, cfg.batch, cfg.seq_len, choice)?;
            cands.push(Candidate {
                micro_batch: mb,
                recompute: pol,
                flops,
                peak_bytes: None,
                fits: None,
            });
        }
    }
    // Cheapest first; among equals, the larger micro-batch (fewer, larger kernels).
    cands.sort_by(|x, y| {
        x.flops
            .cmp(&y.flops)
            .then(y.micro_batch.cmp(&x.micro_batch))
    });

    let mut chosen = None;
    for c in cands.iter_mut() {
        let choice = Choice {
            micro_batch: c.micro_batch,
            recompute: c.recompute,
        };
        match simulate_with(&mut compiler, model, opt, cfg, choice, Some(budget)) {
            Ok(s) => {
                c.peak_bytes = Some(s.peak_reserved);
                c.fits = Some(true);
                chosen = Some((choice, s, c.flops));
                break;
            }
            Err(Error::OutOfMemory { .. }) => c.fits = Some(false),
            Err(e) => return Err(e),
        }
    }
    match chosen {
        Some((choice, s, flops)) => Ok(Plan::chosen(cfg, budget, choice, s, flops, cands)),
        None => Err(no_plan_fits(&mut compiler, model, opt, cfg, budget, &mbs)?),
    }
}

/// The plan for one given choice, if it fits `budget`.
pub fn plan_choice(
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    budget: u64,
    choice: Choice,
) -> Result<Plan> {
    cfg.validate(model.block_size())?;
    let mut compiler = StepCompiler::new(cfg.precision);
    let s = simulate_with(&mut compiler, model, opt, cfg, choice, Some(budget))?;
    let flops = compiler.step_flops(model, cfg.batch, cfg.seq_len, choice)?;
    let only = Candidate {
        micro_batch: choice.micro_batch,
        recompute: choice.recompute,
        flops,
        peak_bytes: Some(s.peak_reserved),
        fits: Some(true),
    };
    Ok(Plan::chosen(cfg, budget, choice, s, flops, vec![only]))
}

impl Plan {
    /// The plan of `choice` for `cfg` under `budget`, from its simulation.
    fn chosen(
        cfg: &TrainConfig,
        budget: u64,
        choice: Choice,
        s: Simulated,
        flops: u64,
        candidates: Vec<Candidate>,
    ) -> Plan {
        Plan {
            batch: cfg.batch,
            seq: cfg.seq_len,
            precision: cfg.precision,
            micro_batch: choice.micro_batch,
            recompute: choice.recompute,
            budget_bytes: budget,
            predicted_peak_bytes: s.peak_reserved,
            flops_per_step: flops,
            breakdown: s.breakdown,
            candidates,
            weight_copies: cfg.weight_copies && cfg.precision.low_dtype().is_some(),
        }
    }
}

/// The error for a budget nothing fits: the smallest plan's need and its parts.
fn no_plan_fits(
    compiler: &mut StepCompiler,
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    budget: u64,
    mbs: &[usize],
) -> Result<Error> {
    let mb = *mbs.iter().min().unwrap_or(&1);
    let mut best: Option<(Choice, Simulated)> = None;
    for pol in Recompute::candidates(compiler.count_blocks(model, cfg.seq_len)?) {
        let choice = Choice {
            micro_batch: mb,
            recompute: pol,
        };
        let s = simulate_with(compiler, model, opt, cfg, choice, None)?;
        if best
            .as_ref()
            .is_none_or(|b| s.peak_reserved < b.1.peak_reserved)
        {
            best = Some((choice, s));
        }
    }
    let (choice, s) = best.ok_or_else(|| Error::Internal("no candidate plans".into()))?;
    Ok(Error::NoPlanFits {
        budget,
        needed: s.peak_reserved,
        detail: format!(
            "the smallest plan (micro-batch {}, recompute {}) needs {} — {}; the largest part is {}",
            choice.micro_batch,
            choice.recompute,
            format_bytes(s.peak_reserved),
            s.breakdown.summary(),
            s.breakdown.dominant()
        ),
    })
}
