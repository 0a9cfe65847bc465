//! The trainer: owns the device, the parameters and optimizer state; plans each
//! step shape within the device's budget; runs micro-batches with gradient
//! accumulation; and recovers inside a step when memory runs out anyway.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use crate::backend::{AdamWSlot, Device, DeviceTensor, TensorRef};
use crate::checkpoint::{self, Checkpoint, DataInfo, Manifest, TrainState};
use crate::data::{Batch, Dataset, Split};
use crate::error::{Error, Result};
use crate::graph::amp::Precision;
use crate::graph::{autodiff, Graph, Value};
use crate::memory::timeline::TRACE_FORMAT;
use crate::memory::{format_bytes, MemPhase, MemoryStats, Tag, TensorKind, Trace};
use crate::nn::{Model, ParamSpec};
use crate::optim::{AdamW, LrSchedule};
use crate::rng::Rng;
use crate::scaler::LossScaler;
use crate::schedule::planner::{self, Choice, Plan};
use crate::schedule::{execute_into, lower_with, Bindings, LowerOptions, Mode, Program, Recompute};
use crate::tensor::{DType, HostTensor, Shape};
use std::path::Path;

/// Re-plans one step may make before giving up.
const MAX_RECOVERIES: u32 = 8;

/// The most tokens one step may hold (2^31). GPT-2's largest published step is
/// 2^19 tokens; a step past this is a typo, and its token and target batches
/// alone would need 16 GiB of host memory.
pub const MAX_TOKENS_PER_STEP: usize = 1 << 31;

/// Fragmentation above this share of reserved memory, wasting more than this
/// share of the budget, is worth a warning...
const FRAGMENTATION_WARN: f64 = 0.10;
/// ...once it has lasted this many steps in a row (the first steps grow the
/// cache and are often fragmented for a moment).
const FRAGMENTATION_STEPS: u32 = 5;

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
        }
    }
}

impl TrainConfig {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Train,
    Eval,
    Logits,
}

/// A traced graph and the values the trainer binds and reads.
struct Traced {
    graph: Graph,
    tokens: Value,
    targets: Option<Value>,
    /// Train graphs: the scalar the backward pass starts from (the micro-batch's
    /// share of the mean loss, times the loss scale).
    seed: Option<Value>,
    /// The single output of eval (loss) and logits graphs; the loss of train graphs.
    out: Value,
    /// Train graphs: the gradient of each parameter, in the trainer's order.
    grads: Vec<Value>,
}

/// (kind, micro-batch, seq, batch): the batch fixes each micro-batch's loss share.
type GraphKey = (Kind, usize, usize, usize);
type ProgramKey = (GraphKey, Option<Recompute>, bool);

struct ParamState {
    spec: ParamSpec,
    value: DeviceTensor, // f32 master weights
    m: DeviceTensor,     // AdamW first moment
    v: DeviceTensor,     // AdamW second moment
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
    params: Vec<ParamState>,
    step: u64,
    graphs: HashMap<GraphKey, Rc<Traced>>,
    programs: HashMap<ProgramKey, Rc<Program>>,
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
    /// The backend libraries' workspace, allocated once at setup; held so the
    /// block lives as long as the trainer.
    _workspace: Option<DeviceTensor>,
    /// Draws training batches; its state is saved in checkpoints.
    sampler: Rng,
    data_info: Option<DataInfo>,
}

fn trace(
    model: &dyn Model,
    specs: &[ParamSpec],
    key: GraphKey,
    precision: Precision,
) -> Result<Traced> {
    let (kind, mb, t, _) = key;
    let mut g = Graph::new();
    g.set_autocast(precision.low_dtype());
    let tokens = g.input("tokens", [mb, t], DType::I32)?;
    let mut logits = model.forward(&mut g, tokens)?;
    if kind == Kind::Logits {
        if g.dtype(logits) != DType::F32 {
            logits = g.cast(logits, DType::F32)?;
        }
        return Ok(Traced {
            graph: g,
            tokens,
            targets: None,
            seed: None,
            out: logits,
            grads: vec![],
        });
    }
    let targets = g.input("targets", [mb, t], DType::I32)?;
    let loss = g.cross_entropy(logits, targets)?;
    g.set_autocast(None);
    let mut grads = vec![];
    let mut seed = None;
    if kind == Kind::Train {
        let wrt = specs
            .iter()
            .map(|p| p.record(&mut g))
            .collect::<Result<Vec<_>>>()?;
        let s = g.input("loss_seed", Shape::scalar(), g.dtype(loss))?;
        grads = autodiff::backward_from(&mut g, loss, &wrt, s)?;
        seed = Some(s);
    }
    Ok(Traced {
        graph: g,
        tokens,
        targets: Some(targets),
        seed,
        out: loss,
        grads,
    })
}

fn lower_traced(tr: &Traced, recompute: Option<Recompute>, accumulate: bool) -> Result<Program> {
    let mut outputs = vec![tr.out];
    if !accumulate {
        outputs.extend(&tr.grads);
    }
    lower_with(
        &tr.graph,
        &outputs,
        &LowerOptions {
            recompute,
            accumulate: if accumulate { tr.grads.clone() } else { vec![] },
            gradients: tr.grads.clone(),
        },
    )
}

/// Transformer blocks the model records (recompute policies cut at them).
pub(crate) fn count_blocks(model: &dyn Model, cfg: &TrainConfig) -> Result<usize> {
    let tr = trace(
        model,
        &[],
        (Kind::Logits, 1, cfg.seq_len, 1),
        Precision::F32,
    )?;
    Ok(tr
        .graph
        .nodes()
        .iter()
        .filter_map(|n| n.block)
        .max()
        .map_or(0, |b| b as usize + 1))
}

/// FLOPs of one step of `cfg.batch` under `choice`, recompute included.
pub(crate) fn step_flops(model: &dyn Model, cfg: &TrainConfig, choice: Choice) -> Result<u64> {
    let key = (Kind::Train, choice.micro_batch, cfg.seq_len, cfg.batch);
    let tr = trace(model, &model.param_specs(), key, cfg.precision)?;
    let p = lower_traced(&tr, Some(choice.recompute), false)?;
    Ok(p.flops * (cfg.batch / choice.micro_batch) as u64)
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
        if choice.micro_batch == 0 || cfg.batch % choice.micro_batch != 0 {
            return Err(Error::invalid(
                "micro-batch",
                format!(
                    "{} does not divide the batch of {}",
                    choice.micro_batch, cfg.batch
                ),
            ));
        }
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
        let cfg_seed = cfg.seed;
        cfg.workspace_bytes = cfg.workspace_bytes.max(device.workspace_bytes());
        if !(opt.lr.is_finite() && opt.lr > 0.0) {
            return Err(Error::invalid(
                "AdamW::lr",
                format!("{} must be a positive number", opt.lr),
            ));
        }
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
        let mut params = Vec::new();
        let place = |device: &mut Device, spec: &ParamSpec, h: Option<HostTensor>, tag: Tag| {
            device.set_tag(tag);
            match h {
                Some(h) => device.upload(&h),
                None => device.alloc(spec.shape.clone(), DType::F32),
            }
        };
        for spec in model.param_specs() {
            let zeros = || init.then(|| HostTensor::zeros(spec.shape.clone(), DType::F32));
            let value = place(
                &mut device,
                &spec,
                init.then(|| spec.init_values(&mut rng)),
                Tag::new(MemPhase::Setup, "param", TensorKind::Weight),
            )?;
            let state = Tag::new(MemPhase::Setup, "adamw_state", TensorKind::OptimizerState);
            let m = place(&mut device, &spec, zeros(), state)?;
            let v = place(&mut device, &spec, zeros(), state)?;
            params.push(ParamState { spec, value, m, v });
        }
        let workspace = match cfg.workspace_bytes {
            0 => None,
            bytes => {
                device.set_tag(Tag::new(
                    MemPhase::Setup,
                    "workspace",
                    TensorKind::Workspace,
                ));
                let w = device.alloc(Shape::new(&[bytes.div_ceil(4) as usize]), DType::F32)?;
                device.backend_mut().set_workspace(Some(w.view()))?;
                Some(w)
            }
        };
        Ok(Trainer {
            device,
            model,
            opt,
            cfg,
            schedule,
            params,
            step: 0,
            graphs: HashMap::new(),
            programs: HashMap::new(),
            plan,
            forced,
            recoveries: 0,
            fragmented_steps: 0,
            scaler,
            skipped_steps: 0,
            inject_overflow: false,
            _workspace: workspace,
            sampler: Rng::fork(cfg_seed, "train-data"),
            data_info: None,
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
            });
        }
        data.batch(
            Split::Train,
            &mut self.sampler,
            self.cfg.batch,
            self.cfg.seq_len,
        )
    }

    /// Saves the whole training state at `path` (a directory, written
    /// atomically): weights, AdamW moments, step, LR schedule, loss scaler,
    /// sampler state and plan.
    pub fn save_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let params = self.parameters()?;
        let moments = self.optimizer_state()?;
        let manifest = Manifest {
            format: checkpoint::FORMAT.to_string(),
            step: self.step,
            model: self.model.describe(),
            precision: self.cfg.precision,
            train: TrainState {
                batch: self.cfg.batch,
                seq_len: self.cfg.seq_len,
                steps: self.cfg.steps,
                seed: self.cfg.seed,
            },
            schedule: self.schedule,
            optimizer: self.opt,
            scaler: self.scaler.clone(),
            sampler_state: self.sampler.state(),
            data: self.data_info.clone(),
            plan: self.plan.as_ref().map(|p| p.choice()).or(self.forced),
            skipped_steps: self.skipped_steps,
            recoveries: self.recoveries,
            files: Default::default(),
        };
        checkpoint::save(path.as_ref(), manifest, &params, &moments)
    }

    /// Continues from the checkpoint at `path` (a checkpoint directory, or a
    /// directory of them: the newest valid one). Returns the step it resumed at.
    pub fn resume(&mut self, path: impl AsRef<Path>) -> Result<u64> {
        let ck = checkpoint::open(path.as_ref())?;
        self.restore(ck)
    }

    /// Loads a checkpoint's state into this trainer, after checking that it
    /// was made for the same model, precision and parameters.
    pub fn restore(&mut self, ck: Checkpoint) -> Result<u64> {
        let m = &ck.manifest;
        let mismatch = |what: String| Error::CheckpointMismatch {
            path: ck.path.clone(),
            what,
        };
        let mine = self.model.describe();
        if m.model != mine {
            return Err(mismatch(describe_diff(&m.model, &mine)));
        }
        if m.precision != self.cfg.precision {
            return Err(mismatch(format!(
                "it was trained in {}, this run is {}; set TrainConfig::precision {}",
                m.precision, self.cfg.precision, m.precision
            )));
        }
        let saved: HashMap<&str, &HostTensor> =
            ck.params.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for p in &self.params {
            match saved.get(p.spec.name.as_str()) {
                Some(t) if t.shape == p.spec.shape => {}
                Some(t) => {
                    return Err(mismatch(format!(
                        "parameter {} is {} there, {} here",
                        p.spec.name, t.shape, p.spec.shape
                    )))
                }
                None => return Err(mismatch(format!("parameter {} is missing", p.spec.name))),
            }
        }
        if saved.len() != self.params.len() {
            return Err(mismatch(format!(
                "it has {} parameters, this model {}",
                saved.len(),
                self.params.len()
            )));
        }
        let t = &m.train;
        if (t.batch, t.seq_len, t.seed) != (self.cfg.batch, self.cfg.seq_len, self.cfg.seed) {
            log::warn!(
                "resuming a run saved with batch {} × {} and seed {} under batch {} × {} and seed {}: training continues, but not as the original run would have",
                t.batch, t.seq_len, t.seed, self.cfg.batch, self.cfg.seq_len, self.cfg.seed
            );
        }
        if m.schedule != self.schedule {
            log::warn!("the learning-rate schedule differs from the checkpoint's (AdamW::lr or TrainConfig::steps changed); using this run's");
        }
        for p in &self.params {
            let (mm, vv) = &ck.moments[&p.spec.name];
            self.device.write(&p.value, saved[p.spec.name.as_str()])?;
            self.device.write(&p.m, mm)?;
            self.device.write(&p.v, vv)?;
        }
        self.step = m.step;
        self.scaler = m.scaler.clone();
        self.sampler = Rng::new(m.sampler_state);
        self.skipped_steps = m.skipped_steps;
        self.recoveries = m.recoveries;
        self.data_info = m.data.clone();
        if let (Some(choice), None) = (m.plan, self.forced) {
            self.adopt_saved_plan(choice);
        }
        Ok(self.step)
    }

    /// Uses the checkpoint's plan when it still fits (same micro-batches, same
    /// numerics); otherwise the next step plans afresh.
    fn adopt_saved_plan(&mut self, choice: Choice) {
        let budget = self.plan_budget();
        match planner::plan_choice(&self.model, self.opt, &self.cfg, budget, choice) {
            Ok(p) => self.plan = Some(p),
            Err(e) => {
                log::warn!(
                    "the checkpoint's plan ({} / {}) no longer fits ({e}); planning again",
                    choice.micro_batch,
                    choice.recompute
                );
                self.plan = None;
            }
        }
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

    /// AdamW moments by parameter name: (name, first moment, second moment).
    pub fn optimizer_state(&mut self) -> Result<Vec<(String, HostTensor, HostTensor)>> {
        let mut out = Vec::new();
        for p in &self.params {
            let m = self.device.download(p.m.view())?;
            let v = self.device.download(p.v.view())?;
            out.push((p.spec.name.clone(), m, v));
        }
        Ok(out)
    }

    /// Current parameter values, by name, in the model's order.
    pub fn parameters(&mut self) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::new();
        for p in &self.params {
            out.push((p.spec.name.clone(), self.device.download(p.value.view())?));
        }
        Ok(out)
    }

    fn traced(&mut self, key: GraphKey) -> Result<Rc<Traced>> {
        if let Some(t) = self.graphs.get(&key) {
            return Ok(t.clone());
        }
        let specs: Vec<ParamSpec> = self.params.iter().map(|p| p.spec.clone()).collect();
        let t = Rc::new(trace(&self.model, &specs, key, self.cfg.precision)?);
        self.graphs.insert(key, t.clone());
        Ok(t)
    }

    fn program(
        &mut self,
        key: GraphKey,
        recompute: Option<Recompute>,
        accumulate: bool,
    ) -> Result<(Rc<Traced>, Rc<Program>)> {
        let tr = self.traced(key)?;
        let pk = (key, recompute, accumulate);
        if let Some(p) = self.programs.get(&pk) {
            return Ok((tr, p.clone()));
        }
        let p = Rc::new(lower_traced(&tr, recompute, accumulate)?);
        self.programs.insert(pk, p.clone());
        Ok((tr, p))
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

    /// Runs the program of `kind` on the micro-batch `sub` of a batch of `b`,
    /// adding gradients into `sinks` when given.
    fn run(
        &mut self,
        kind: Kind,
        sub: &Batch,
        b: usize,
        recompute: Option<Recompute>,
        sinks: &[&TensorRef],
    ) -> Result<Vec<DeviceTensor>> {
        let scale = self.scaler.as_ref().map_or(1.0, |s| s.scale);
        let key = (kind, sub.batch, sub.seq, b);
        let accumulate = !sinks.is_empty();
        let (tr, prog) = self.program(key, recompute, accumulate)?;
        self.device
            .set_tag(Tag::new(MemPhase::Data, "upload", TensorKind::Data));
        let shape = Shape::new(&[sub.batch, sub.seq]);
        // A simulation's batch is shapes only: the tensors are sizes, not data.
        let ids = |device: &mut Device, v: &[i32]| match v.is_empty() {
            true => device.alloc(shape.clone(), DType::I32),
            false => device.upload(&HostTensor::from_i32(shape.clone(), v)?),
        };
        let tokens = ids(&mut self.device, &sub.tokens)?;
        let targets = match tr.targets {
            Some(_) => match ids(&mut self.device, &sub.targets) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.device.free(tokens);
                    return Err(e);
                }
            },
            None => None,
        };
        // Each micro-batch's mean loss weighs mb/b of the batch's mean loss.
        let seed = match tr.seed {
            Some(_) => {
                let v = (sub.batch as f64 / b as f64) * scale;
                let up = HostTensor::from_f64_as(Shape::scalar(), &[v], DType::F32)
                    .and_then(|h| self.device.upload(&h));
                match up {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.device.free(tokens);
                        if let Some(t) = targets {
                            self.device.free(t);
                        }
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let mut bind: Bindings = HashMap::new();
        if let (Some(v), Some(t)) = (tr.seed, &seed) {
            bind.insert(v, t.view());
        }
        bind.insert(tr.tokens, tokens.view());
        if let (Some(v), Some(t)) = (tr.targets, &targets) {
            bind.insert(v, t.view());
        }
        for p in &self.params {
            if let Some(v) = tr.graph.lookup(&p.spec.name) {
                bind.insert(v, p.value.view());
            }
        }
        let mode = if kind == Kind::Train {
            Mode::Train
        } else {
            Mode::Eval
        };
        let result = execute_into(&mut self.device, &tr.graph, &prog, &bind, mode, sinks);
        self.device.free(tokens);
        for t in [targets, seed].into_iter().flatten() {
            self.device.free(t);
        }
        result
    }

    fn read_scalar(&mut self, t: &TensorRef) -> Result<f32> {
        Ok(self.device.download(t)?.to_f32_vec()[0])
    }

    fn free_all(&mut self, ts: Vec<DeviceTensor>) {
        for t in ts {
            self.device.free(t);
        }
    }

    /// One micro-batch of a training step: its loss and, for the first
    /// micro-batch, the gradients (later ones add into `accum`).
    fn train_micro(
        &mut self,
        sub: &Batch,
        b: usize,
        choice: Choice,
        accum: Option<&[DeviceTensor]>,
    ) -> Result<(f32, Vec<DeviceTensor>)> {
        let sinks: Vec<&TensorRef> = accum.map_or(vec![], |a| a.iter().map(|t| t.view()).collect());
        // Borrow of `accum` ends before the device is used mutably below.
        let sinks: Vec<TensorRef> = sinks.into_iter().cloned().collect();
        let sink_refs: Vec<&TensorRef> = sinks.iter().collect();
        let mut outs = self.run(Kind::Train, sub, b, Some(choice.recompute), &sink_refs)?;
        let loss_t = outs.remove(0);
        let loss = self.read_scalar(loss_t.view());
        self.device.free(loss_t);
        match loss {
            Ok(l) => Ok((l, outs)),
            Err(e) => {
                self.free_all(outs);
                Err(e)
            }
        }
    }

    /// One optimizer step on `batch`, in micro-batches as planned. Parameters
    /// and optimizer state change only at its very end, so when memory runs out
    /// inside it the trainer re-plans for the memory really available and re-runs
    /// the failed micro-batch; gradients of earlier micro-batches stay.
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        self.check_batch(batch)?;
        let start = Instant::now();
        self.device.set_step(self.step + 1);
        let b = batch.batch;
        let mut choice = self.ensure_plan(b, batch.seq)?;
        let mut grads: Option<Vec<DeviceTensor>> = None;
        let mut loss = 0f64;
        let mut done = 0;
        let mut attempts = 0u32;
        let mut retried_same = false;
        while done < b {
            let mb = choice.micro_batch;
            let sub = batch.slice(done, mb);
            match self.train_micro(&sub, b, choice, grads.as_deref()) {
                Ok((l, g)) => {
                    loss += l as f64 * mb as f64 / b as f64;
                    if grads.is_none() {
                        grads = Some(g);
                    }
                    done += mb;
                    retried_same = false;
                }
                Err(e @ Error::OutOfMemory { .. }) if self.forced.is_none() && self.cfg.recover => {
                    attempts += 1;
                    self.recoveries += 1;
                    match self.replan_after_oom(b, batch.seq, choice, retried_same, attempts, &e) {
                        Ok(c) => {
                            retried_same = c == choice;
                            choice = c;
                        }
                        Err(fatal) => {
                            if let Some(g) = grads {
                                self.free_all(g);
                            }
                            return Err(fatal);
                        }
                    }
                }
                Err(e) => {
                    if let Some(g) = grads {
                        self.free_all(g);
                    }
                    return Err(e);
                }
            }
        }
        let outs = grads.unwrap_or_default();
        let loss = loss as f32;
        self.device
            .set_tag(Tag::new(MemPhase::Optimizer, "adamw", TensorKind::Gradient));
        if std::mem::take(&mut self.inject_overflow) {
            if let Err(e) = self.poison(&outs) {
                self.free_all(outs);
                return Err(e);
            }
        }
        let scale = self.scaler.as_ref().map_or(1.0, |s| s.scale);
        let grads: Vec<&TensorRef> = outs.iter().map(|t| t.view()).collect();
        // One pass over the gradients: Σg² both detects inf/NaN (the sum is not
        // finite) and gives the norm; unscaling is folded into AdamW's grad scale.
        let norm = match self.device.backend_mut().sum_squares(&grads) {
            Ok(n) => n.sqrt() / scale,
            Err(e) => {
                self.free_all(outs);
                return Err(e);
            }
        };
        let lr = self.schedule.at(self.step);
        let skipped = !(loss.is_finite() && norm.is_finite());
        if let Some(s) = &mut self.scaler {
            if let Err(e) = s.update(skipped, self.step + 1) {
                self.free_all(outs);
                return Err(e);
            }
        }
        if skipped {
            self.skipped_steps += 1;
            let why = if self.scaler.is_some() {
                "f16 overflow; the loss scaler adjusts"
            } else {
                "the run may be diverging: lower AdamW::lr"
            };
            log::warn!(
                "step {}: loss {loss} / gradient norm {norm} is not finite; update skipped ({why})",
                self.step + 1
            );
        } else {
            let clip = self.opt.clip_scale(norm);
            let args = self.opt.step_args(lr, self.step + 1, clip / scale);
            let slots: Vec<AdamWSlot> = self
                .params
                .iter()
                .zip(&grads)
                .map(|(p, g)| AdamWSlot {
                    param: p.value.view(),
                    grad: g,
                    m: p.m.view(),
                    v: p.v.view(),
                    decay: p.spec.decays(),
                })
                .collect();
            if let Err(e) = self.device.backend_mut().adamw(&slots, &args) {
                self.free_all(outs);
                return Err(e);
            }
        }
        let memory = self.device.memory_stats();
        self.free_all(outs);
        self.warn_fragmentation(&memory);
        self.step += 1;
        let secs = start.elapsed().as_secs_f64();
        Ok(StepReport {
            step: self.step,
            loss,
            lr,
            grad_norm: norm,
            tokens_per_s: (batch.batch * batch.seq) as f64 / secs.max(1e-9),
            skipped,
            micro_batch: choice.micro_batch,
            recompute: choice.recompute,
            predicted_peak_bytes: self.predicted_peak(),
            recoveries: attempts,
            precision: self.cfg.precision,
            loss_scale: scale,
            memory,
        })
    }

    /// A batch with data of its own shape; shapes only on a simulated device.
    fn check_batch(&self, batch: &Batch) -> Result<()> {
        if batch.is_shape_only() && self.device.is_simulated() {
            return Ok(());
        }
        batch.check()
    }

    /// Writes inf into the first element of the first gradient.
    fn poison(&mut self, grads: &[DeviceTensor]) -> Result<()> {
        let Some(g) = grads.first() else {
            return Ok(());
        };
        let h = self.device.download(g.view())?;
        let mut v = h.to_f64_vec();
        v[0] = f64::INFINITY;
        let h = HostTensor::from_f64_as(h.shape.clone(), &v, h.dtype)?;
        self.device.write(g, &h)
    }

    /// A new plan after an out-of-memory error inside a step: within the memory
    /// really available now, with micro-batches that divide the failed one (so
    /// the rest of the batch still splits evenly). The first time the same plan
    /// comes back the failure is taken as transient and retried once; after
    /// that the new plan must predict a lower peak than the failed one.
    fn replan_after_oom(
        &mut self,
        b: usize,
        t: usize,
        failed: Choice,
        retried_same: bool,
        attempts: u32,
        err: &Error,
    ) -> Result<Choice> {
        let step = self.step + 1;
        if attempts > MAX_RECOVERIES {
            return Err(Error::RecoveryFailed {
                step,
                attempts: attempts - 1,
                last: err.to_string(),
            });
        }
        self.device.empty_cache();
        let stats = self.device.memory_stats();
        let available = stats.reserved_bytes + self.device.free_memory();
        let mut cap = self
            .device
            .budget_bytes()
            .map_or(available, |bud| bud.min(available));
        if retried_same {
            cap = cap.min(self.predicted_peak().saturating_sub(1));
        }
        let allowed: Vec<usize> = (1..=failed.micro_batch)
            .rev()
            .filter(|m| failed.micro_batch % m == 0)
            .collect();
        let cfg = TrainConfig {
            batch: b,
            seq_len: t,
            ..self.cfg.clone()
        };
        let p = planner::plan(&self.model, self.opt, &cfg, cap, &allowed).map_err(|pe| {
            Error::RecoveryFailed {
                step,
                attempts,
                last: format!(
                    "{err}; no plan fits the {} now available: {pe}",
                    format_bytes(cap)
                ),
            }
        })?;
        log::warn!(
            "step {step}: out of memory in micro-batch of {} (recompute {}); re-planned for {} available: micro-batch {}, recompute {}, predicted peak {}",
            failed.micro_batch,
            failed.recompute,
            format_bytes(cap),
            p.micro_batch,
            p.recompute,
            format_bytes(p.predicted_peak_bytes)
        );
        let c = p.choice();
        self.plan = Some(p);
        Ok(c)
    }

    /// PyTorch users learn to watch for "cached ≫ allocated"; say it once, when
    /// it has lasted [`FRAGMENTATION_STEPS`] steps and wastes a real share of
    /// the budget: a few cached MiB under a budget of GiB cost nothing.
    fn warn_fragmentation(&mut self, m: &MemoryStats) {
        if self.device.is_simulated() || self.fragmented_steps > FRAGMENTATION_STEPS {
            return;
        }
        let wasted = m.peak_reserved_bytes.saturating_sub(m.peak_allocated_bytes);
        let budget = self.plan_budget();
        if !costly_fragmentation(m, budget) {
            self.fragmented_steps = 0;
            return;
        }
        self.fragmented_steps += 1;
        if self.fragmented_steps == FRAGMENTATION_STEPS {
            // Past the limit: never again in this run.
            self.fragmented_steps = FRAGMENTATION_STEPS + 1;
            log::warn!(
                "memory fragmentation {:.0}% for {FRAGMENTATION_STEPS} steps: peak reserved {} for a peak of {} allocated, {} of the {} budget in cached segments no tensor could use. The caching allocator keeps them for reuse; they count against the budget.",
                100.0 * m.fragmentation(),
                format_bytes(m.peak_reserved_bytes),
                format_bytes(m.peak_allocated_bytes),
                format_bytes(wasted),
                format_bytes(budget)
            );
        }
    }

    /// Mean loss on one batch (in planned micro-batches) without touching any state.
    pub fn loss(&mut self, batch: &Batch) -> Result<f32> {
        self.check_batch(batch)?;
        let choice = self.ensure_plan(batch.batch, batch.seq)?;
        let mb = choice.micro_batch;
        let mut loss = 0f64;
        for start in (0..batch.batch).step_by(mb) {
            let sub = batch.slice(start, mb);
            let outs = self.run(Kind::Eval, &sub, batch.batch, None, &[])?;
            let l = self.read_scalar(outs[0].view());
            self.free_all(outs);
            loss += l? as f64 * mb as f64 / batch.batch as f64;
        }
        Ok(loss as f32)
    }

    /// Mean validation loss over `eval_batches` batches that are the same at every
    /// evaluation (their own random stream), so evaluations compare.
    pub fn eval_loss(&mut self, data: &Dataset) -> Result<f64> {
        let mut rng = Rng::fork(self.cfg.seed, "eval");
        let mut sum = 0.0;
        for _ in 0..self.cfg.eval_batches {
            let b = data.batch(Split::Val, &mut rng, self.cfg.batch, self.cfg.seq_len)?;
            sum += self.loss(&b)? as f64;
        }
        Ok(sum / self.cfg.eval_batches as f64)
    }

    /// Samples `n` tokens after `prompt` at `temperature`.
    pub fn generate(
        &mut self,
        prompt: &[i32],
        n: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Result<Vec<i32>> {
        let t = self.model.block_size();
        let v = self.model.vocab_size();
        let mut ids: Vec<i32> = if prompt.is_empty() {
            vec![b'\n' as i32]
        } else {
            prompt.to_vec()
        };
        for _ in 0..n {
            let window = &ids[ids.len().saturating_sub(t)..];
            let last = window.len() - 1;
            // Causal attention: padding after the window cannot change its logits.
            let mut tokens = window.to_vec();
            tokens.resize(t, 0);
            let batch = Batch {
                batch: 1,
                seq: t,
                tokens,
                targets: vec![0; t],
            };
            let outs = self.run(Kind::Logits, &batch, 1, None, &[])?;
            let logits = self.device.download(outs[0].view());
            self.free_all(outs);
            let logits = logits?.to_f64_vec();
            let row = &logits[last * v..(last + 1) * v];
            ids.push(sample(row, temperature, rng) as i32);
        }
        Ok(ids[ids.len() - n..].to_vec())
    }
}

fn sample(logits: &[f64], temperature: f64, rng: &mut Rng) -> usize {
    let temp = temperature.max(1e-6);
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = logits.iter().map(|&x| ((x - m) / temp).exp()).collect();
    let total: f64 = p.iter().sum();
    let mut r = rng.uniform() * total;
    for (i, &pi) in p.iter().enumerate() {
        r -= pi;
        if r <= 0.0 {
            return i;
        }
    }
    p.len() - 1
}

/// Names the fields where two model descriptions differ.
fn describe_diff(saved: &serde_json::Value, mine: &serde_json::Value) -> String {
    match (saved.as_object(), mine.as_object()) {
        (Some(a), Some(b)) => {
            let diffs: Vec<String> = a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k} is {v} there, {} here",
                        b.get(k).map_or("absent".into(), |x| x.to_string())
                    )
                })
                .collect();
            format!("the model differs: {}", diffs.join(", "))
        }
        _ => format!("the model differs: {saved} there, {mine} here"),
    }
}

/// The budget plans are made for on `device`: its own, or all of its memory.
fn plan_budget(device: &Device) -> u64 {
    device
        .budget_bytes()
        .unwrap_or_else(|| device.total_memory())
}

/// Whether the cache's unused part is worth a warning: over
/// [`FRAGMENTATION_WARN`] of what is reserved *and* of the budget.
fn costly_fragmentation(m: &MemoryStats, budget: u64) -> bool {
    let wasted = m.peak_reserved_bytes.saturating_sub(m.peak_allocated_bytes);
    m.fragmentation() > FRAGMENTATION_WARN && wasted as f64 > FRAGMENTATION_WARN * budget as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(allocated_mib: u64, reserved_mib: u64) -> MemoryStats {
        MemoryStats {
            peak_allocated_bytes: allocated_mib << 20,
            peak_reserved_bytes: reserved_mib << 20,
            ..Default::default()
        }
    }

    #[test]
    fn fragmentation_warns_only_when_it_costs_budget() {
        // The default tiny run: 31% of 56 MiB is cached, under a 21 GiB budget.
        assert!(!costly_fragmentation(&stats(39, 56), 21 << 30));
        // The same share under a 64 MiB budget is a fifth of it.
        assert!(costly_fragmentation(&stats(39, 56), 64 << 20));
        // Little fragmentation, tight budget: nothing to say.
        assert!(!costly_fragmentation(&stats(55, 56), 56 << 20));
    }
}
