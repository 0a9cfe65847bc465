//! The trainer: owns the device, the model state (weights, AdamW moments) and
//! the plan that keeps each step inside the budget; draws batches; takes
//! optimizer steps (`step.rs`: accumulate gradients, then update), recovers
//! inside a step when memory runs out anyway, saves and restores checkpoints
//! (`resume.rs`), and evaluates and samples (`generate.rs`). Compiling and
//! running step graphs is `schedule`'s, shared with the planner.

mod generate;
mod resume;
mod step;

use crate::backend::Device;
use crate::checkpoint::DataInfo;
use crate::data::{Batch, Dataset, Split};
use crate::error::{Error, Result};
use crate::graph::amp::Precision;
use crate::memory::timeline::TRACE_FORMAT;
use crate::memory::{MemoryStats, Trace};
use crate::nn::Model;
use crate::optim::{AdamW, LrSchedule};
use crate::rng::Rng;
use crate::scaler::LossScaler;
use crate::schedule::planner::{self, Choice, Plan};
use crate::schedule::run::{ModelState, Runner};
use crate::schedule::simulate::check_divides;
use crate::schedule::step::StepCompiler;
use crate::schedule::Recompute;

pub use crate::config::{TrainConfig, MAX_TOKENS_PER_STEP};

/// What one optimizer step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// 1-based number of the step just taken.
    pub step: u64,
    /// Mean cross-entropy over the batch (all micro-batches).
    pub loss: f32,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens of this step divided by its wall time (the host waits for the device).
    pub tokens_per_s: f64,
    /// True when the update was skipped because the loss or gradients were not finite.
    pub skipped: bool,
    /// Micro-batch size the step ran with (after any recovery).
    pub micro_batch: usize,
    /// Recompute policy the step ran with (after any recovery).
    pub recompute: Recompute,
    /// Levers the step ran with (after any recovery).
    pub levers: crate::schedule::levers::Levers,
    /// The plan's simulated peak reserved bytes.
    pub predicted_peak_bytes: u64,
    /// Out-of-memory recoveries inside this step.
    pub recoveries: u32,
    /// Activation precision of the step (`Auto` resolved).
    pub precision: Precision,
    /// The f16 loss scale used for this step (1 without scaling).
    pub loss_scale: f64,
    /// The device's allocator counters after the step.
    pub memory: MemoryStats,
}

/// Trains a [`Model`] on a [`Device`]: owns the weights, gradients and AdamW
/// state on the device, the plan (micro-batch, recompute) that keeps every step
/// inside the budget, the loss scaler and the batch sampler, and recovers inside
/// a step when memory runs out anyway.
pub struct Trainer<M: Model> {
    device: Device,
    model: M,
    opt: AdamW,
    cfg: TrainConfig,
    schedule: LrSchedule,
    /// Weights and AdamW moments, on the device.
    state: ModelState,
    /// This trainer's traced graphs and lowered programs.
    compiler: StepCompiler,
    step: u64,
    plan: Option<Plan>,
    /// A fixed plan (simulations, tests): no planning, no recovery.
    forced: Option<Choice>,
    recoveries: u64,
    /// Steps in a row with fragmentation over the warning level.
    fragmented_steps: u32,
    scaler: Option<LossScaler>,
    skipped_steps: u64,
    /// Test hook: write inf into a gradient of the next step.
    inject_overflow: bool,
    /// Draws training batches; its state is saved in checkpoints.
    sampler: Rng,
    data_info: Option<DataInfo>,
    /// The last inference shape and its micro-batch: `(batch, seq, micro)`.
    inference_plan: Option<(usize, usize, usize)>,
}

impl<M: Model> Trainer<M> {
    /// Initialises the parameters from `cfg.seed` and places them on `device`.
    /// Each step shape is planned within the device's budget (or its whole
    /// memory when no budget is set) the first time it is seen.
    pub fn new(device: Device, model: M, opt: AdamW, cfg: TrainConfig) -> Result<Trainer<M>> {
        Self::build(device, model, opt, cfg, None)
    }

    /// A trainer that always runs `choice` (no planning, no recovery). On a
    /// simulated device the weights are allocated but never written.
    pub fn with_plan(
        device: Device,
        model: M,
        opt: AdamW,
        cfg: TrainConfig,
        choice: Choice,
    ) -> Result<Trainer<M>> {
        check_divides(choice, cfg.batch)?;
        Self::build(device, model, opt, cfg, Some(choice))
    }

    fn build(
        mut device: Device,
        model: M,
        opt: AdamW,
        mut cfg: TrainConfig,
        forced: Option<Choice>,
    ) -> Result<Trainer<M>> {
        cfg.validate(model.block_size())?;
        cfg.precision = cfg.precision.resolve(device.preferred_low_precision());
        if let Some(low) = cfg.precision.low_dtype() {
            if !device.supports(low) {
                return Err(Error::Unsupported {
                    backend: device.name(),
                    what: format!("{} training", cfg.precision),
                    hint: "use TrainConfig::precision f32 or auto",
                });
            }
        }
        let scaler = cfg.precision.needs_loss_scaling().then(LossScaler::default);
        // Fixed once, so the device's host pool and every plan agree on it.
        cfg.host_budget_bytes = cfg.host_budget();
        device.host().set_budget(cfg.host_budget_bytes);
        cfg.workspace_bytes = cfg.workspace_bytes.max(device.workspace_bytes());
        opt.validate()?;
        let warmup = cfg.warmup.unwrap_or((cfg.steps / 10).clamp(1, 200));
        let schedule = LrSchedule {
            peak: opt.lr,
            warmup,
            total: cfg.steps,
            min_ratio: cfg.min_lr_ratio,
        };
        let init = !device.is_simulated();
        // Planned before any weight exists: a budget no plan fits is a
        // NoPlanFits with the breakdown, not an OutOfMemory from an upload.
        let plan = match forced {
            Some(_) => None,
            None => {
                if init {
                    cfg.check_host_memory()?;
                }
                Some(planner::plan(&model, opt, &cfg, plan_budget(&device), &[])?)
            }
        };
        let mut rng = Rng::fork(cfg.seed, "init");
        let specs = model.param_specs();
        let rng = init.then_some(&mut rng);
        // The plan says whether the weights' low-precision copies fit; every
        // later plan (recovery, resume) simulates the state placed here.
        if let Some(p) = &plan {
            cfg.weight_copies = p.weight_copies;
        }
        // The moments' format is fixed for the run from here: later plans
        // (recovery, resume) may move the moments, never requantise them.
        let at = plan
            .as_ref()
            .map_or(forced.unwrap_or_else(default_choice).levers, |p| p.levers)
            .placement();
        cfg.optimizer_state = match at.q8 {
            true => crate::schedule::levers::OptimizerState::Q8,
            false => crate::schedule::levers::OptimizerState::F32,
        };
        let mut compiler = StepCompiler::new(cfg.precision);
        let shadows = if cfg.weight_copies {
            compiler.low_copies(&model)
        } else {
            Default::default()
        };
        let state = ModelState::place(&mut device, specs, &shadows, rng, cfg.workspace_bytes, at)?;
        Ok(Trainer {
            compiler,
            sampler: Rng::fork(cfg.seed, "train-data"),
            device,
            model,
            opt,
            cfg,
            schedule,
            state,
            step: 0,
            plan,
            forced,
            recoveries: 0,
            fragmented_steps: 0,
            scaler,
            skipped_steps: 0,
            inject_overflow: false,
            data_info: None,
            inference_plan: None,
        })
    }

    /// The next training batch from `data`, drawn by the trainer's own sampler
    /// (so a checkpoint resumes the same stream of batches).
    pub fn next_batch(&mut self, data: &Dataset) -> Result<Batch> {
        // Recorded once per data set, not copied on every step.
        let known = self.data_info.as_ref().is_some_and(|d| {
            d.name == data.name && d.sha256.as_deref() == Some(data.fingerprint())
        });
        if !known {
            self.data_info = Some(DataInfo {
                name: data.name.clone(),
                train_bytes: data.len(Split::Train),
                sha256: Some(data.fingerprint().to_string()),
                tokenizer: Some(data.tokenizer.clone()),
            });
        }
        data.batch(
            Split::Train,
            &mut self.sampler,
            self.cfg.batch,
            self.cfg.seq_len,
        )
    }

    /// The precision this trainer runs in (`Auto` resolved).
    pub fn precision(&self) -> Precision {
        self.cfg.precision
    }

    /// The f16 loss scaler, when the precision needs one.
    pub fn scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// Replaces the loss scaler (to tune its settings).
    pub fn set_scaler(&mut self, s: LossScaler) {
        self.scaler = Some(s);
    }

    /// Steps whose update was skipped (non-finite loss or gradients).
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// Fault injection for tests: one gradient of the next step becomes inf
    /// before the overflow check, as an f16 overflow would make it.
    pub fn inject_overflow_next_step(&mut self) {
        self.inject_overflow = true;
    }

    /// The model being trained (its description; weights live on the device).
    pub fn model(&self) -> &M {
        &self.model
    }
    /// The device the trainer runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// The device, for tracing, budgets or stats; tensors it owns belong to the
    /// trainer.
    pub fn device_mut(&mut self) -> &mut Device {
        &mut self.device
    }
    /// The configuration the trainer was built with.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }
    /// The device's allocator counters (PyTorch's names).
    pub fn memory_stats(&self) -> MemoryStats {
        self.device.memory_stats()
    }
    /// The memory events recorded since [`Device::start_trace`], as the trace
    /// `headroom report` and [`crate::report::render_svg`] read; `None` when
    /// tracing was not started.
    pub fn take_memory_trace(&mut self) -> Option<Trace> {
        let events = self.device.take_trace()?;
        Some(Trace {
            format: TRACE_FORMAT.to_string(),
            device: self.device.name().to_string(),
            budget_bytes: self.device.budget_bytes(),
            events,
        })
    }
    /// Out-of-memory recoveries so far.
    pub fn recoveries(&self) -> u64 {
        self.recoveries
    }

    /// The plan for the configured step shape, made now if not yet made.
    pub fn plan(&mut self) -> Result<&Plan> {
        let (b, t) = (self.cfg.batch, self.cfg.seq_len);
        self.ensure_plan(b, t)?;
        self.plan
            .as_ref()
            .ok_or_else(|| Error::Internal("a forced trainer has no plan".into()))
    }

    /// Uses `plan` (made by [`planner::plan`] for this model and step shape)
    /// instead of planning again.
    pub fn use_plan(&mut self, plan: Plan) {
        self.plan = Some(plan);
    }

    /// The budget plans are made for: the device's, or all of its memory.
    fn plan_budget(&self) -> u64 {
        plan_budget(&self.device)
    }

    fn ensure_plan(&mut self, b: usize, t: usize) -> Result<Choice> {
        if let Some(c) = self.forced {
            return Ok(c);
        }
        if let Some(p) = &self.plan {
            if p.batch == b && p.seq == t {
                return Ok(p.choice());
            }
        }
        let cfg = TrainConfig {
            batch: b,
            seq_len: t,
            ..self.cfg.clone()
        };
        let p = planner::plan(&self.model, self.opt, &cfg, self.plan_budget(), &[])?;
        log::debug!("{p}");
        let c = p.choice();
        self.plan = Some(p);
        Ok(c)
    }

    fn predicted_peak(&self) -> u64 {
        self.plan.as_ref().map_or(0, |p| p.predicted_peak_bytes)
    }

    /// The device, compiled graphs, model and its state, for running graphs.
    fn runner(&mut self) -> Runner<'_> {
        Runner {
            device: &mut self.device,
            compiler: &mut self.compiler,
            model: &self.model,
            state: &self.state,
        }
    }

    /// Moves the AdamW moments where the current plan keeps them, when that
    /// is not where they are (recovery escalated to offload).
    fn place_state(&mut self, choice: Choice) -> Result<()> {
        let want = choice.levers.placement();
        if want == self.state.placement {
            return Ok(());
        }
        if want.q8 != self.state.placement.q8 {
            return Err(Error::Internal(
                "a plan changed the optimizer state's format mid-run".into(),
            ));
        }
        log::warn!(
            "moving AdamW's moments to the {} for plan levers {}",
            if want.host { "host pool" } else { "device" },
            choice.levers
        );
        self.state.move_moments(&mut self.device, want.host)
    }

    /// A batch holding the model's inputs, each of its dtype and shape;
    /// shapes only on a simulated device.
    fn check_batch(&self, batch: &Batch) -> Result<()> {
        if batch.is_shape_only() && self.device.is_simulated() {
            return Ok(());
        }
        batch.check_inputs(&self.model.inputs(batch.seq))
    }
}

/// The choice of a trainer without a plan or forced choice: never used to
/// run, only to place the state before a plan exists.
fn default_choice() -> Choice {
    Choice {
        micro_batch: 1,
        recompute: Recompute::None,
        levers: Default::default(),
    }
}

/// The budget plans are made for on `device`: its own, or all of its memory.
fn plan_budget(device: &Device) -> u64 {
    device
        .budget_bytes()
        .unwrap_or_else(|| device.total_memory())
}
