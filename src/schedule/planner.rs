//! The planner: for each candidate (micro-batch × recompute policy × levers)
//! it lowers the step and runs it through the real caching allocator over a
//! simulated device with a host pool, so both predicted peaks are the
//! allocators' own behaviour, not a formula. It picks the fastest candidate
//! by the time model ([`super::cost`]) that fits the device budget and the
//! host budget.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::cost::{self, Rates};
use super::levers::{release_blocked, Levers, OptimizerState};
use super::recompute::Recompute;
use super::simulate::simulate_with;
pub use super::simulate::{simulate, simulated_trace, Breakdown, Simulated};
pub use super::step::Choice;
use super::step::{GraphKey, GraphKind, ProgramKey, StepCompiler};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::memory::format_bytes;
use crate::nn::Model;
use crate::optim::AdamW;

/// The GPU whose figures price plans when neither `--gpu` nor the device
/// names one: the 24 GB card most of our users train on.
pub const DEFAULT_GPU: &str = "rtx4090";

/// One candidate the planner considered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The candidate's micro-batch size.
    pub micro_batch: usize,
    /// The candidate's recompute policy.
    pub recompute: Recompute,
    /// The candidate's levers.
    #[serde(default)]
    pub levers: Levers,
    /// FLOPs of a whole step (all micro-batches, recompute included).
    pub flops: u64,
    /// The time model's step time, in milliseconds (an estimate).
    #[serde(default)]
    pub predicted_ms: f64,
    /// Simulated peak reserved bytes under the budget; `None`: not simulated
    /// (a faster candidate already fitted, or its lever set's smallest
    /// candidate did not fit) or out of memory in simulation.
    pub peak_bytes: Option<u64>,
    /// Simulated peak of the host pool, where simulated.
    #[serde(default)]
    pub host_peak_bytes: Option<u64>,
    /// `None`: not simulated.
    pub fits: Option<bool>,
    /// Not simulated itself: no candidate of its lever set fitted at the
    /// smallest micro-batch.
    #[serde(default)]
    pub ruled_out: bool,
}

impl Candidate {
    fn choice(&self) -> Choice {
        Choice {
            micro_batch: self.micro_batch,
            recompute: self.recompute,
            levers: self.levers,
        }
    }
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
    /// The chosen levers (`plan --json` lists them by name).
    #[serde(default)]
    pub levers: Levers,
    /// The budget planned against, in bytes.
    pub budget_bytes: u64,
    /// The host pool's budget planned against, in bytes.
    #[serde(default)]
    pub host_budget_bytes: Option<u64>,
    /// Peak reserved bytes of the chosen candidate in simulation.
    pub predicted_peak_bytes: u64,
    /// Peak reserved bytes of the host pool in simulation.
    #[serde(default)]
    pub host_peak_bytes: u64,
    /// FLOPs of one step of the chosen candidate, recompute included.
    pub flops_per_step: u64,
    /// The time model's step time on [`Plan::gpu`], in milliseconds: an
    /// estimate from spec-sheet figures, not a measurement.
    #[serde(default)]
    pub predicted_step_ms: f64,
    /// The GPU whose figures the time model used.
    #[serde(default)]
    pub gpu: String,
    /// What the chosen candidate's peak holds.
    pub breakdown: Breakdown,
    /// The candidates in the order tried, fastest first; those after the
    /// chosen one were never simulated.
    pub candidates: Vec<Candidate>,
    /// Whether the weights keep low-precision copies
    /// ([`TrainConfig::weight_copies`]): off where they would cost a cheaper
    /// plan, or where no plan fits with them.
    #[serde(default)]
    pub weight_copies: bool,
    /// Why gradient release was not a candidate, when it was not.
    #[serde(default)]
    pub release_blocked: Option<String>,
}

impl Plan {
    /// The chosen micro-batch size, recompute policy and levers.
    pub fn choice(&self) -> Choice {
        Choice {
            micro_batch: self.micro_batch,
            recompute: self.recompute,
            levers: self.levers,
        }
    }

    /// Tokens per second the time model predicts.
    pub fn predicted_tokens_per_s(&self) -> f64 {
        (self.batch * self.seq) as f64 / (self.predicted_step_ms / 1e3).max(1e-12)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan for batch {} × {} tokens, {}, budget {}{}:",
            self.batch,
            self.seq,
            self.precision,
            format_bytes(self.budget_bytes),
            self.host_budget_bytes.map_or(String::new(), |h| format!(
                ", host budget {}",
                format_bytes(h)
            ))
        )?;
        writeln!(
            f,
            "  {:>11}  {:<16} {:<34} {:>12}  {:>9}  {:>11}  {:>11}  fits",
            "micro-batch", "recompute", "levers", "GFLOP/step", "ms (est.)", "peak", "host"
        )?;
        // The candidates that decided the plan are those simulated or ruled
        // out; the rest are slower and were never tried. `{:#}` lists them all.
        let untried = self.candidates.iter().filter(|c| c.fits.is_none()).count();
        let mut ruled_out: Vec<(Levers, usize)> = Vec::new();
        for c in &self.candidates {
            if c.ruled_out && !f.alternate() {
                match ruled_out.iter_mut().find(|r| r.0 == c.levers) {
                    Some(r) => r.1 += 1,
                    None => ruled_out.push((c.levers, 1)),
                }
                continue;
            }
            if c.fits.is_none() && !f.alternate() {
                continue;
            }
            let chosen = c.choice() == self.choice();
            let fits = match (c.fits, c.peak_bytes) {
                (Some(true), _) => "yes",
                (Some(false), _) if c.ruled_out => {
                    "no (its levers fit no plan at the smallest micro-batch)"
                }
                (Some(false), _) => "no",
                (None, _) => "(not tried)",
            };
            writeln!(
                f,
                "{} {:>11}  {:<16} {:<34} {:>12.1}  {:>9.1}  {:>11}  {:>11}  {}",
                if chosen { "→" } else { " " },
                c.micro_batch,
                c.recompute.to_string(),
                c.levers.to_string(),
                c.flops as f64 / 1e9,
                c.predicted_ms,
                c.peak_bytes.map_or("-".into(), format_bytes),
                c.host_peak_bytes
                    .filter(|&h| h > 0)
                    .map_or("-".into(), format_bytes),
                fits
            )?;
        }
        for (levers, n) in &ruled_out {
            writeln!(
                f,
                "  levers {levers}: no plan fits even at the smallest micro-batch ({n} candidates ruled out)"
            )?;
        }
        if untried > 0 && !f.alternate() {
            writeln!(
                f,
                "  ({untried} slower candidates not simulated; {{:#}} lists them)"
            )?;
        }
        writeln!(
            f,
            "  chosen: micro-batch {}, recompute {}, levers {}; predicted peak {} ({})",
            self.micro_batch,
            self.recompute,
            self.levers,
            format_bytes(self.predicted_peak_bytes),
            self.breakdown.summary()
        )?;
        writeln!(
            f,
            "  predicted step {:.1} ms, {:.0} tokens/s on {} (time model from spec-sheet figures: an estimate)",
            self.predicted_step_ms,
            self.predicted_tokens_per_s(),
            self.gpu
        )?;
        if self.levers != Levers::default() {
            if let Some(why) = &self.release_blocked {
                writeln!(f, "  gradient release not used: {why}")?;
            }
        }
        if self.precision.low_dtype().is_some() && !self.weight_copies {
            writeln!(
                f,
                "  weights are cast every step: their {} copies would keep a faster plan from fitting",
                self.precision
            )?;
        }
        Ok(())
    }
}

/// The time model's rates for `cfg`: its `--gpu`, else [`DEFAULT_GPU`].
pub fn rates(cfg: &TrainConfig) -> Result<Rates> {
    let name = cfg.gpu.as_deref().unwrap_or(DEFAULT_GPU);
    let gpu = super::gpus::by_name(name).ok_or_else(|| {
        Error::invalid(
            "--gpu",
            format!(
                "'{name}' is not in the catalog; use one of {} (headroom plan --gpu list)",
                super::gpus::names().join(", ")
            ),
        )
    })?;
    Ok(Rates::of(gpu))
}

/// FLOPs of one step of `cfg.batch` under `choice`, recompute included.
pub fn step_flops(model: &dyn Model, cfg: &TrainConfig, choice: Choice) -> Result<u64> {
    StepCompiler::new(cfg.precision).step_flops(model, cfg.batch, cfg.seq_len, choice)
}

/// Plans a step of `cfg.batch × cfg.seq_len` within `budget` bytes, with
/// micro-batches from `micro_batches` (divisors of the batch; empty: all).
/// Weight copies ([`TrainConfig::weight_copies`]) save a cast per weight per
/// step, about 1% of a step, while they hold 2 bytes per parameter: where
/// they keep the fastest candidate from fitting, the plan without them is
/// taken if it is faster, and where no plan fits with them, it is the one.
pub fn plan(
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    budget: u64,
    micro_batches: &[usize],
) -> Result<Plan> {
    let copies = cfg.weight_copies && cfg.precision.low_dtype().is_some();
    let with = plan_for(model, opt, cfg, budget, micro_batches);
    let fastest_fits =
        matches!(&with, Ok(p) if p.candidates.first().is_some_and(|c| c.fits == Some(true)));
    if !copies || fastest_fits {
        return with;
    }
    let plain = TrainConfig {
        weight_copies: false,
        ..cfg.clone()
    };
    let without = plan_for(model, opt, &plain, budget, micro_batches);
    match (with, without) {
        (Ok(w), Ok(wo)) if wo.predicted_step_ms < w.predicted_step_ms => Ok(wo),
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
    let rates = rates(cfg)?;
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
    let sets = Levers::candidates(cfg, &opt);
    let numels: Vec<usize> = model
        .param_specs()
        .iter()
        .map(|p| p.shape.numel())
        .collect();
    let mut cands: Vec<(usize, Candidate)> = Vec::new();
    let policies = policies(cfg, n_blocks);
    for &mb in &mbs {
        for &pol in &policies {
            let choice = Choice {
                micro_batch: mb,
                recompute: pol,
                levers: Levers::default(),
            };
            let flops = compiler.step_flops(model, cfg.batch, cfg.seq_len, choice)?;
            let compute = compute_seconds(&mut compiler, model, cfg, mb, pol, &rates)?;
            for (pref, &levers) in sets.iter().enumerate() {
                if levers.gradient_release && mb != b {
                    continue; // release needs the whole batch in one micro-batch
                }
                let u = cost::update_seconds(
                    &numels,
                    levers.state_8bit,
                    levers.offload_optimizer,
                    levers.gradient_release,
                    &rates,
                );
                cands.push((
                    pref,
                    Candidate {
                        micro_batch: mb,
                        recompute: pol,
                        levers,
                        flops,
                        predicted_ms: (compute + u.device + u.transfer) * 1e3,
                        peak_bytes: None,
                        host_peak_bytes: None,
                        fits: None,
                        ruled_out: false,
                    },
                ));
            }
        }
    }
    // Fastest first; 8-bit state (which changes the numerics) only after
    // every f32 plan, when the user left it to the planner; among equals,
    // the preferred lever set, fewer FLOPs, the larger micro-batch.
    let q8_last = cfg.optimizer_state == OptimizerState::Auto;
    cands.sort_by(|(pa, x), (pb, y)| {
        (q8_last && x.levers.state_8bit)
            .cmp(&(q8_last && y.levers.state_8bit))
            .then(
                x.predicted_ms
                    .partial_cmp(&y.predicted_ms)
                    .unwrap_or(Ordering::Equal),
            )
            .then(pa.cmp(pb))
            .then(x.flops.cmp(&y.flops))
            .then(y.micro_batch.cmp(&x.micro_batch))
    });
    let mut cands: Vec<Candidate> = cands.into_iter().map(|(_, c)| c).collect();

    // A lever set none of whose smallest-micro-batch candidates fits is
    // ruled out whole: a few simulations instead of one per candidate (a
    // larger micro-batch holds more activations and nothing less).
    let mut set_fits: Vec<Option<bool>> = vec![None; sets.len()];
    let mut chosen = None;
    let smallest_mb = *mbs.last().unwrap_or(&1);
    for i in 0..cands.len() {
        let set = sets.iter().position(|s| *s == cands[i].levers).unwrap_or(0);
        if set_fits[set].is_none() {
            let probes: Vec<Choice> = cands
                .iter()
                .filter(|c| c.levers == sets[set] && c.micro_batch == smallest_mb)
                .map(|c| c.choice())
                .collect();
            let mut fits = false;
            for ch in probes {
                match simulate_with(&mut compiler, model, opt, cfg, ch, Some(budget)) {
                    Ok(_) => {
                        fits = true;
                        break;
                    }
                    Err(e) if is_oom(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            set_fits[set] = Some(fits);
        }
        if set_fits[set] == Some(false) {
            cands[i].fits = Some(false);
            cands[i].ruled_out = true;
            continue;
        }
        let c = &mut cands[i];
        match simulate_with(&mut compiler, model, opt, cfg, c.choice(), Some(budget)) {
            Ok(s) => {
                c.peak_bytes = Some(s.peak_reserved);
                c.host_peak_bytes = Some(s.host_peak_reserved);
                c.fits = Some(true);
                chosen = Some((c.clone(), s));
                break;
            }
            Err(e) if is_oom(&e) => c.fits = Some(false),
            Err(e) => return Err(e),
        }
    }
    match chosen {
        Some((c, s)) => Ok(Plan::chosen(cfg, &opt, budget, &c, s, cands, &rates)),
        None => Err(no_plan_fits(
            &mut compiler,
            model,
            opt,
            cfg,
            budget,
            &mbs,
            &sets,
        )?),
    }
}

/// The recompute policies a plan for `cfg` may use: activation offload
/// only where offload is allowed.
fn policies(cfg: &TrainConfig, n_blocks: usize) -> Vec<Recompute> {
    let mut v = Recompute::candidates(n_blocks);
    if cfg.offload {
        v.extend(Recompute::offload_candidates());
    }
    v
}

/// Whether a simulation failed for want of memory (device or host).
fn is_oom(e: &Error) -> bool {
    matches!(e, Error::OutOfMemory { .. } | Error::HostOutOfMemory { .. })
}

/// Seconds of a step's forward and backward passes (all micro-batches) of
/// `mb` sequences under `pol`, by the time model.
fn compute_seconds(
    compiler: &mut StepCompiler,
    model: &dyn Model,
    cfg: &TrainConfig,
    mb: usize,
    pol: Recompute,
    rates: &Rates,
) -> Result<f64> {
    let key = |accumulate| ProgramKey {
        graph: GraphKey {
            kind: GraphKind::Train,
            micro_batch: mb,
            seq: cfg.seq_len,
        },
        recompute: Some(pol),
        accumulate,
        release: false,
    };
    let (g, first) = compiler.program(model, key(false))?;
    let mut t = cost::program_seconds(&g.graph, &first, rates);
    let n = cfg.batch / mb;
    if n > 1 {
        let (g, rest) = compiler.program(model, key(true))?;
        t += (n - 1) as f64 * cost::program_seconds(&g.graph, &rest, rates);
    }
    Ok(t)
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
    let rates = rates(cfg)?;
    let mut compiler = StepCompiler::new(cfg.precision);
    let s = simulate_with(&mut compiler, model, opt, cfg, choice, Some(budget))?;
    let flops = compiler.step_flops(model, cfg.batch, cfg.seq_len, choice)?;
    let compute = compute_seconds(
        &mut compiler,
        model,
        cfg,
        choice.micro_batch,
        choice.recompute,
        &rates,
    )?;
    let numels: Vec<usize> = model
        .param_specs()
        .iter()
        .map(|p| p.shape.numel())
        .collect();
    let l = choice.levers;
    let u = cost::update_seconds(
        &numels,
        l.state_8bit,
        l.offload_optimizer,
        l.gradient_release,
        &rates,
    );
    let only = Candidate {
        micro_batch: choice.micro_batch,
        recompute: choice.recompute,
        levers: choice.levers,
        flops,
        predicted_ms: (compute + u.device + u.transfer) * 1e3,
        peak_bytes: Some(s.peak_reserved),
        host_peak_bytes: Some(s.host_peak_reserved),
        fits: Some(true),
        ruled_out: false,
    };
    Ok(Plan::chosen(
        cfg,
        &opt,
        budget,
        &only.clone(),
        s,
        vec![only],
        &rates,
    ))
}

impl Plan {
    /// The plan of candidate `c` for `cfg` under `budget`, from its simulation.
    fn chosen(
        cfg: &TrainConfig,
        opt: &AdamW,
        budget: u64,
        c: &Candidate,
        s: Simulated,
        candidates: Vec<Candidate>,
        rates: &Rates,
    ) -> Plan {
        Plan {
            batch: cfg.batch,
            seq: cfg.seq_len,
            precision: cfg.precision,
            micro_batch: c.micro_batch,
            recompute: c.recompute,
            levers: c.levers,
            budget_bytes: budget,
            host_budget_bytes: cfg.host_budget(),
            predicted_peak_bytes: s.peak_reserved,
            host_peak_bytes: s.host_peak_reserved,
            flops_per_step: c.flops,
            predicted_step_ms: c.predicted_ms,
            gpu: rates.gpu.to_string(),
            breakdown: s.breakdown,
            candidates,
            weight_copies: cfg.weight_copies && cfg.precision.low_dtype().is_some(),
            release_blocked: release_blocked(cfg, opt).map(str::to_string),
        }
    }
}

/// The error for a budget nothing fits: the smallest plan's need and its
/// parts, with every lever the run allows.
#[allow(clippy::too_many_arguments)]
fn no_plan_fits(
    compiler: &mut StepCompiler,
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    budget: u64,
    mbs: &[usize],
    sets: &[Levers],
) -> Result<Error> {
    let mb = *mbs.iter().min().unwrap_or(&1);
    // The lever set that saves the most device memory: the last one built.
    let levers = sets
        .iter()
        .copied()
        .rfind(|l| !l.gradient_release || mb == cfg.batch)
        .unwrap_or_default();
    let mut best: Option<(Choice, Simulated)> = None;
    for pol in policies(cfg, compiler.count_blocks(model, cfg.seq_len)?) {
        let choice = Choice {
            micro_batch: mb,
            recompute: pol,
            levers,
        };
        let mut unbounded = cfg.clone();
        unbounded.host_budget_bytes = Some(u64::MAX / 8);
        let s = simulate_with(compiler, model, opt, &unbounded, choice, None)?;
        if best
            .as_ref()
            .is_none_or(|b| s.peak_reserved < b.1.peak_reserved)
        {
            best = Some((choice, s));
        }
    }
    let (choice, s) = best.ok_or_else(|| Error::Internal("no candidate plans".into()))?;
    let host = match cfg.host_budget() {
        Some(h) if s.host_peak_reserved > h => format!(
            "; its host pool needs {}, over the host budget of {} (--host-budget)",
            format_bytes(s.host_peak_reserved),
            format_bytes(h)
        ),
        _ => String::new(),
    };
    let missing = missing_levers(cfg, &opt);
    Ok(Error::NoPlanFits {
        budget,
        needed: s.peak_reserved,
        detail: format!(
            "the smallest plan (micro-batch {}, recompute {}, levers {}) needs {} — {}; the largest part is {}{host}{missing}",
            choice.micro_batch,
            choice.recompute,
            choice.levers,
            format_bytes(s.peak_reserved),
            s.breakdown.summary(),
            s.breakdown.dominant()
        ),
    })
}

/// The levers the run's settings keep from the planner, as advice.
fn missing_levers(cfg: &TrainConfig, opt: &AdamW) -> String {
    let mut v = Vec::new();
    if !cfg.offload {
        v.push("optimizer offload is off (TrainConfig::offload)".to_string());
    }
    if cfg.optimizer_state == OptimizerState::F32 {
        v.push("8-bit optimizer state is off (--optimizer-state 8bit or auto)".to_string());
    }
    if let Some(why) = release_blocked(cfg, opt) {
        v.push(format!("gradient release is not legal: {why}"));
    } else if !cfg.gradient_release {
        v.push("gradient release is off (TrainConfig::gradient_release)".to_string());
    }
    match v.is_empty() {
        true => String::new(),
        false => format!("; levers not tried: {}", v.join("; ")),
    }
}
