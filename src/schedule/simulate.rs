//! The planner's prediction: a plan's setup, step, evaluation and second step
//! run through [`Runner`] (the trainer's own micro-batch code) on a simulated
//! device, with the real caching allocator and the budget. Nothing computes;
//! every request the allocator sees is the real run's.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::run::{ModelState, Runner};
use super::step::{Choice, StepCompiler};
use crate::backend::Device;
use crate::config::TrainConfig;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::memory::timeline::{Event, EventKind, TensorKind, TRACE_FORMAT};
use crate::memory::{format_bytes, Budget, MemPhase, MemoryStats, Tag, Trace};
use crate::nn::Model;
use crate::optim::AdamW;

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
    /// Host pool: peak reserved bytes (offloaded AdamW moments). Not part of
    /// [`Breakdown::total`], which is the device's.
    #[serde(default)]
    pub host_optimizer_state: u64,
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
        let mut s = self
            .parts()
            .iter()
            .filter(|p| p.1 > 0)
            .map(|(n, b)| format!("{n} {}", format_bytes(*b)))
            .collect::<Vec<_>>()
            .join(", ");
        if self.host_optimizer_state > 0 {
            s += &format!(
                "; host: optimizer state {}",
                format_bytes(self.host_optimizer_state)
            );
        }
        s
    }
}

/// A simulated run's peak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Simulated {
    /// Peak reserved bytes over the run: what the budget must cover.
    pub peak_reserved: u64,
    /// Peak allocated bytes over the run.
    pub peak_allocated: u64,
    /// Peak reserved bytes of the host pool over the run.
    pub host_peak_reserved: u64,
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
    let mut compiler = StepCompiler::new(cfg.precision);
    simulate_with(&mut compiler, model, opt, cfg, choice, budget)
}

/// [`simulate`] with the graphs and programs of `compiler`, which the
/// planner shares between its candidates.
pub(crate) fn simulate_with(
    compiler: &mut StepCompiler,
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    choice: Choice,
    budget: Option<u64>,
) -> Result<Simulated> {
    let (stats, host, events) = run_simulation(compiler, model, opt, cfg, choice, budget)?;
    let mut breakdown = breakdown_at_peak(&events);
    breakdown.allocator_slack = stats.peak_reserved_bytes - stats.peak_allocated_bytes;
    breakdown.host_optimizer_state = host.peak_reserved_bytes;
    Ok(Simulated {
        peak_reserved: stats.peak_reserved_bytes,
        peak_allocated: stats.peak_allocated_bytes,
        host_peak_reserved: host.peak_reserved_bytes,
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
    let mut compiler = StepCompiler::new(cfg.precision);
    let (_, _, events) = run_simulation(&mut compiler, model, opt, cfg, choice, budget)?;
    Ok(Trace {
        format: TRACE_FORMAT.to_string(),
        device: "simulated".to_string(),
        budget_bytes: budget,
        events,
    })
}

fn run_simulation(
    compiler: &mut StepCompiler,
    model: &dyn Model,
    opt: AdamW,
    cfg: &TrainConfig,
    choice: Choice,
    budget: Option<u64>,
) -> Result<(MemoryStats, MemoryStats, Vec<Event>)> {
    check_divides(choice, cfg.batch)?;
    cfg.validate(model.block_size())?;
    opt.validate()?;
    let mut device = Device::simulated(u64::MAX / 4);
    device.set_budget(budget.map(Budget::Bytes));
    device.host().set_budget(cfg.host_budget());
    device.start_trace();
    let workspace = cfg.workspace_bytes.max(device.workspace_bytes());
    let shadows = if cfg.weight_copies {
        compiler.low_copies(model)
    } else {
        Default::default()
    };
    let specs = model.param_specs();
    let at = choice.levers.placement();
    let state = ModelState::place(&mut device, specs, &shadows, None, workspace, at)?;
    let batch = Batch::shape_only(cfg.batch, cfg.seq_len);
    let mut runner = Runner {
        device: &mut device,
        compiler,
        model,
        state: &state,
    };
    // The arguments do not matter: nothing computes.
    let args = opt.step_args(opt.lr, 1, 1.0);
    for step in 1..=2 {
        runner.device.set_step(step);
        let acc = runner.accumulate(&batch, choice, 1.0, None, Some(&args))?;
        // The update reads the gradients in place; offloaded moments pass
        // through a window it allocates.
        runner
            .device
            .set_tag(Tag::new(MemPhase::Optimizer, "adamw", TensorKind::Gradient));
        let views = acc.grads.views();
        let all: Vec<usize> = (0..views.len()).collect();
        let updated = super::update::apply(runner.device, &state, &all, &views, &args);
        acc.grads.free(runner.device);
        updated?;
        if step == 1 {
            runner.mean_loss(&batch, choice.micro_batch)?;
        }
    }
    let stats = device.memory_stats();
    let host = device.host_stats();
    let events = device.take_trace().unwrap_or_default();
    Ok((stats, host, events))
}

/// [`Error::InvalidArgument`] unless `choice`'s micro-batch divides `batch`.
pub(crate) fn check_divides(choice: Choice, batch: usize) -> Result<()> {
    if choice.micro_batch == 0 || batch % choice.micro_batch != 0 {
        return Err(Error::invalid(
            "micro-batch",
            format!(
                "{} does not divide the batch of {batch}",
                choice.micro_batch
            ),
        ));
    }
    Ok(())
}

/// Live bytes by tensor kind at the first moment allocated memory peaks.
fn breakdown_at_peak(events: &[Event]) -> Breakdown {
    let peak = events.iter().map(|e| e.allocated).max().unwrap_or(0);
    let mut live = HashMap::new();
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

/// The largest micro-batch dividing `batch` whose inference program
/// ([`GraphKind::Infer`](super::step::GraphKind::Infer)) runs within `budget`
/// beside a copy of `state` (the weights, moments, low-precision copies and
/// workspace a trainer holds between steps), simulated as [`simulate`]
/// simulates a step; [`Error::NoPlanFits`] when not even one example fits.
pub(crate) fn inference_micro_batch(
    compiler: &mut StepCompiler,
    model: &dyn Model,
    cfg: &TrainConfig,
    state: &ModelState,
    batch: usize,
    seq: usize,
    budget: u64,
) -> Result<usize> {
    let shadows: HashMap<String, crate::tensor::DType> = state
        .params
        .iter()
        .filter_map(|p| Some((p.spec.name.clone(), p.shadow.as_ref()?.dtype())))
        .collect();
    let specs: Vec<_> = state.params.iter().map(|p| p.spec.clone()).collect();
    let workspace = cfg.workspace_bytes;
    let mut smallest = None;
    for mb in (1..=batch).rev().filter(|m| batch % m == 0) {
        let mut device = Device::simulated(u64::MAX / 4);
        device.set_budget(Some(Budget::Bytes(budget)));
        device.host().set_budget(cfg.host_budget());
        let placed = ModelState::place(
            &mut device,
            specs.clone(),
            &shadows,
            None,
            workspace,
            state.placement,
        )?;
        let mut runner = Runner {
            device: &mut device,
            compiler,
            model,
            state: &placed,
        };
        let kind = super::step::GraphKind::Infer;
        let sub = Batch::shape_only(mb, seq);
        match runner.run(kind, &sub, batch, None, 1.0, &[]) {
            Ok(outs) => {
                super::run::Owned(outs).free(&mut device);
                return Ok(mb);
            }
            Err(Error::OutOfMemory { .. }) => {
                smallest = Some(device.memory_stats().peak_reserved_bytes);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::NoPlanFits {
        budget,
        needed: smallest.unwrap_or(0),
        detail: format!(
            "inference of one example of {seq} beside the model state (weights {}) does not fit; raise the budget",
            format_bytes(specs.iter().map(|s| s.shape.byte_size(crate::tensor::DType::F32)).sum())
        ),
    })
}
