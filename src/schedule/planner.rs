//! The planner: for each candidate (micro-batch × recompute policy) it lowers
//! the step and runs it through the real caching allocator over a simulated
//! device, so the predicted peak is the allocator's own behaviour, not a formula.
//! It picks the cheapest candidate (FLOPs, recompute counted) that fits.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::recompute::Recompute;
use crate::backend::Device;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::memory::timeline::{Event, EventKind, TensorKind, TRACE_FORMAT};
use crate::memory::{format_bytes, Budget, MemoryStats, Trace};
use crate::nn::Model;
use crate::optim::AdamW;
use crate::train::{TrainConfig, Trainer};

/// What the planner decides for a step shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Choice {
    /// Sequences per micro-batch; a step accumulates gradients over
    /// `batch / micro_batch` micro-batches.
    pub micro_batch: usize,
    /// The recompute policy every micro-batch is lowered with.
    pub recompute: Recompute,
}

/// A predicted peak, split by what the memory holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Bytes of parameters ([`TensorKind::Weight`]).
    pub weights: u64,
    /// Bytes of parameter gradients ([`TensorKind::Gradient`]).
    pub gradients: u64,
    /// Bytes of AdamW moments ([`TensorKind::OptimizerState`]).
    pub optimizer_state: u64,
    /// Bytes of activations and backward intermediates ([`TensorKind::Activation`]).
    pub activations: u64,
    /// Bytes of token and target batches ([`TensorKind::Data`]).
    pub data: u64,
    /// Bytes of backend library workspace ([`TensorKind::Workspace`]).
    pub workspace: u64,
    /// Reserved by the allocator but holding no tensor at the peak.
    pub allocator_slack: u64,
}

impl Breakdown {
    /// Sum of all parts, in bytes; for a simulated peak, the peak reserved bytes.
    pub fn total(&self) -> u64 {
        self.weights
            + self.gradients
            + self.optimizer_state
            + self.activations
            + self.data
            + self.workspace
            + self.allocator_slack
    }

    fn parts(&self) -> [(&'static str, u64); 7] {
        [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimizer state", self.optimizer_state),
            ("activations", self.activations),
            ("data", self.data),
            ("workspace", self.workspace),
            ("allocator slack", self.allocator_slack),
        ]
    }

    /// The largest part, by name.
    pub fn dominant(&self) -> &'static str {
        self.parts()
            .iter()
            .max_by_key(|p| p.1)
            .map_or("nothing", |p| p.0)
    }

    /// The non-zero parts on one line ("weights 1.50 MiB, activations 3.00 MiB").
    pub fn summary(&self) -> String {
        self.parts()
            .iter()
            .filter(|p| p.1 > 0)
            .map(|(n, b)| format!("{n} {}", format_bytes(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

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
        )
    }
}

/// FLOPs of one step of `cfg.batch` under `choice`, recompute included.
pub fn step_flops(model: &dyn Model, cfg: &TrainConfig, choice: Choice) -> Result<u64> {
    crate::train::step_flops(model, cfg, choice)
}

/// A simulated run's peak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Simulated {
    /// Peak reserved bytes over the run: what the budget must cover.
    pub peak_reserved: u64,
    /// Peak allocated bytes over the run.
    pub peak_allocated: u64,
    /// What memory held when allocated bytes first peaked, plus the slack.
    pub breakdown: Breakdown,
}

/// Runs setup, a step, an evaluation and a second step (the warm cache) of
/// `choice` on a simulated device under `budget` (`None`: unlimited).
pub fn simulate(
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    choice: Choice,
    budget: Option<u64>,
) -> Result<Simulated> {
    let (stats, events) = run_simulation(model, opt, cfg, choice, budget)?;
    let mut breakdown = breakdown_at_peak(&events);
    breakdown.allocator_slack = stats.peak_reserved_bytes - stats.peak_allocated_bytes;
    Ok(Simulated {
        peak_reserved: stats.peak_reserved_bytes,
        peak_allocated: stats.peak_allocated_bytes,
        breakdown,
    })
}

/// The memory trace of [`simulate`]'s run (setup, a step, an evaluation and a
/// second step), tagged like a real run's, so `headroom report` can draw where
/// a plan's predicted peak comes from before anything runs.
pub fn simulated_trace(
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    choice: Choice,
    budget: Option<u64>,
) -> Result<Trace> {
    let (_, events) = run_simulation(model, opt, cfg, choice, budget)?;
    Ok(Trace {
        format: TRACE_FORMAT.to_string(),
        device: "simulated".to_string(),
        budget_bytes: budget,
        events,
    })
}

fn run_simulation(
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    choice: Choice,
    budget: Option<u64>,
) -> Result<(MemoryStats, Vec<Event>)> {
    let mut dev = Device::simulated(u64::MAX / 4);
    dev.set_budget(budget.map(Budget::Bytes));
    dev.start_trace();
    let mut t = Trainer::with_plan(dev, model, opt, cfg.clone(), choice)?;
    let batch = Batch::shape_only(cfg.batch, cfg.seq_len);
    t.step(&batch)?;
    t.loss(&batch)?;
    t.step(&batch)?;
    let stats = t.memory_stats();
    let events = t.device_mut().take_trace().unwrap_or_default();
    Ok((stats, events))
}

/// Live bytes by tensor kind at the first moment allocated memory peaks.
fn breakdown_at_peak(events: &[Event]) -> Breakdown {
    let peak = events.iter().map(|e| e.allocated).max().unwrap_or(0);
    let mut live = std::collections::HashMap::new();
    for e in events {
        match e.kind {
            EventKind::Alloc => {
                live.insert(e.addr, (e.bytes, e.tensor));
            }
            EventKind::Free => {
                live.remove(&e.addr);
            }
            _ => {}
        }
        if e.kind == EventKind::Alloc && e.allocated == peak {
            break;
        }
    }
    let mut b = Breakdown::default();
    for &(bytes, kind) in live.values() {
        match kind {
            TensorKind::Weight => b.weights += bytes,
            TensorKind::OptimizerState => b.optimizer_state += bytes,
            TensorKind::Gradient => b.gradients += bytes,
            TensorKind::Activation => b.activations += bytes,
            TensorKind::Data => b.data += bytes,
            TensorKind::Workspace => b.workspace += bytes,
        }
    }
    b
}

/// Plans a step of `cfg.batch × cfg.seq_len` within `budget` bytes, with
/// micro-batches from `micro_batches` (divisors of the batch; empty: all).
pub fn plan(
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
    let n_blocks = crate::train::count_blocks(model, cfg)?;
    let mut cands: Vec<Candidate> = Vec::new();
    for &mb in &mbs {
        for pol in Recompute::candidates(n_blocks) {
            let choice = Choice {
                micro_batch: mb,
                recompute: pol,
            };
            let flops = crate::train::step_flops(model, cfg, choice)?;
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
        match simulate(model, opt, cfg, choice, Some(budget)) {
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
        None => Err(no_plan_fits(model, opt, cfg, budget, &mbs)?),
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
    let s = simulate(model, opt, cfg, choice, Some(budget))?;
    let flops = crate::train::step_flops(model, cfg, choice)?;
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
        }
    }
}

/// The error for a budget nothing fits: the smallest plan's need and its parts.
fn no_plan_fits(
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    budget: u64,
    mbs: &[usize],
) -> Result<Error> {
    let mb = *mbs.iter().min().unwrap_or(&1);
    let mut best: Option<(Choice, Simulated)> = None;
    for pol in Recompute::candidates(crate::train::count_blocks(model, cfg)?) {
        let choice = Choice {
            micro_batch: mb,
            recompute: pol,
        };
        let s = simulate(model, opt, cfg, choice, None)?;
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
