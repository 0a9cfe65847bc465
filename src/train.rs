//! The trainer: owns the device, the parameters and optimizer state, and one
//! compiled program per (kind, batch, sequence) shape.

use std::collections::HashMap;
use std::time::Instant;

use crate::backend::{AdamWSlot, Device, DeviceTensor, TensorRef};
use crate::data::{Batch, Dataset, Split};
use crate::error::{Error, Result};
use crate::graph::{autodiff, Graph, Value};
use crate::memory::MemoryStats;
use crate::memory::{MemPhase, Tag};
use crate::nn::{Model, ParamSpec};
use crate::optim::{AdamW, LrSchedule};
use crate::rng::Rng;
use crate::schedule::{execute, lower, Bindings, Mode, Program};
use crate::tensor::{DType, HostTensor, Shape};

#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub batch: usize,
    pub seq_len: usize,
    pub steps: u64,
    /// Warmup steps; `None`: a tenth of the run, at most 200.
    pub warmup: Option<u64>,
    /// The LR decays to this fraction of its peak.
    pub min_lr_ratio: f64,
    pub seed: u64,
    /// Batches of validation data per evaluation.
    pub eval_batches: usize,
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
        }
    }
}

impl TrainConfig {
    pub fn validate(&self, block_size: usize) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::invalid("--batch", "must be at least 1"));
        }
        if self.seq_len == 0 {
            return Err(Error::invalid("--seq", "must be at least 1"));
        }
        if self.seq_len > block_size {
            return Err(Error::invalid(
                "--seq",
                format!(
                    "{} is longer than the model's context of {block_size} tokens; use --seq {block_size} or less",
                    self.seq_len
                ),
            ));
        }
        if self.steps == 0 {
            return Err(Error::invalid("--steps", "must be at least 1"));
        }
        if self.eval_batches == 0 {
            return Err(Error::invalid("eval_batches", "must be at least 1"));
        }
        Ok(())
    }
}

/// What one optimizer step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// 1-based number of the step just taken.
    pub step: u64,
    pub loss: f32,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// True when the update was skipped because the loss or gradients were not finite.
    pub skipped: bool,
    pub memory: MemoryStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Train,
    Eval,
    Logits,
}

/// A traced, lowered program and the values the trainer binds and reads.
struct Compiled {
    graph: Graph,
    program: Program,
    tokens: Value,
    targets: Option<Value>,
}

struct ParamState {
    spec: ParamSpec,
    value: DeviceTensor, // f32 master weights
    m: DeviceTensor,     // AdamW first moment
    v: DeviceTensor,     // AdamW second moment
}

pub struct Trainer<M: Model> {
    device: Device,
    model: M,
    opt: AdamW,
    cfg: TrainConfig,
    schedule: LrSchedule,
    params: Vec<ParamState>,
    step: u64,
    programs: HashMap<(Kind, usize, usize), Compiled>,
    fragmentation_warned: bool,
}

impl<M: Model> Trainer<M> {
    /// Initialises the parameters from `cfg.seed` and places them on `device`.
    pub fn new(device: Device, model: M, opt: AdamW, cfg: TrainConfig) -> Result<Trainer<M>> {
        cfg.validate(model.block_size())?;
        if !(opt.lr.is_finite() && opt.lr > 0.0) {
            return Err(Error::invalid(
                "--lr",
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
        let mut t = Trainer {
            device,
            model,
            opt,
            cfg,
            schedule,
            params: Vec::new(),
            step: 0,
            programs: HashMap::new(),
            fragmentation_warned: false,
        };
        let mut rng = Rng::fork(t.cfg.seed, "init");
        for spec in t.model.param_specs() {
            let init = spec.init_values(&mut rng);
            let value = t.device.upload(&init)?;
            let m = t
                .device
                .upload(&HostTensor::zeros(spec.shape.clone(), DType::F32))?;
            let v = t
                .device
                .upload(&HostTensor::zeros(spec.shape.clone(), DType::F32))?;
            t.params.push(ParamState { spec, value, m, v });
        }
        Ok(t)
    }

    pub fn model(&self) -> &M {
        &self.model
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn device_mut(&mut self) -> &mut Device {
        &mut self.device
    }
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }
    pub fn memory_stats(&self) -> MemoryStats {
        self.device.memory_stats()
    }

    /// Current parameter values, by name, in the model's order.
    pub fn parameters(&mut self) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::new();
        for p in &self.params {
            out.push((p.spec.name.clone(), self.device.download(p.value.view())?));
        }
        Ok(out)
    }

    fn compile(&self, kind: Kind, b: usize, t: usize) -> Result<Compiled> {
        let mut g = Graph::new();
        let tokens = g.input("tokens", [b, t], DType::I32)?;
        let logits = self.model.forward(&mut g, tokens)?;
        if kind == Kind::Logits {
            let program = lower(&g, &[logits])?;
            return Ok(Compiled {
                graph: g,
                program,
                tokens,
                targets: None,
            });
        }
        let targets = g.input("targets", [b, t], DType::I32)?;
        let loss = g.cross_entropy(logits, targets)?;
        let mut outputs = vec![loss];
        if kind == Kind::Train {
            let wrt = self
                .params
                .iter()
                .map(|p| p.spec.record(&mut g))
                .collect::<Result<Vec<_>>>()?;
            outputs.extend(autodiff::backward(&mut g, loss, &wrt)?);
        }
        let program = lower(&g, &outputs)?;
        Ok(Compiled {
            graph: g,
            program,
            tokens,
            targets: Some(targets),
        })
    }

    /// Runs the program of `kind` for `batch`, returning its outputs.
    fn run(&mut self, kind: Kind, batch: &Batch) -> Result<Vec<DeviceTensor>> {
        let key = (kind, batch.batch, batch.seq);
        if !self.programs.contains_key(&key) {
            let c = self.compile(kind, batch.batch, batch.seq)?;
            self.programs.insert(key, c);
        }
        let c = &self.programs[&key];
        self.device.set_tag(Tag {
            phase: MemPhase::Data,
            op: "upload",
            value: None,
        });
        let shape = Shape::new(&[batch.batch, batch.seq]);
        let tokens = self
            .device
            .upload(&HostTensor::from_i32(shape.clone(), &batch.tokens)?)?;
        let targets = match c.targets {
            Some(_) => match HostTensor::from_i32(shape, &batch.targets)
                .and_then(|h| self.device.upload(&h))
            {
                Ok(t) => Some(t),
                Err(e) => {
                    self.device.free(tokens);
                    return Err(e);
                }
            },
            None => None,
        };
        let mut bind: Bindings = HashMap::new();
        bind.insert(c.tokens, tokens.view());
        if let (Some(v), Some(t)) = (c.targets, &targets) {
            bind.insert(v, t.view());
        }
        for p in &self.params {
            if let Some(v) = c.graph.lookup(&p.spec.name) {
                bind.insert(v, p.value.view());
            }
        }
        let mode = if kind == Kind::Train {
            Mode::Train
        } else {
            Mode::Eval
        };
        let result = execute(&mut self.device, &c.graph, &c.program, &bind, mode);
        self.device.free(tokens);
        if let Some(t) = targets {
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

    /// One optimizer step on `batch`. Parameters change only at its very end.
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        let start = Instant::now();
        self.device.set_step(self.step + 1);
        let outs = self.run(Kind::Train, batch)?;
        self.device.set_tag(Tag {
            phase: MemPhase::Optimizer,
            op: "adamw",
            value: None,
        });
        let loss = self.read_scalar(outs[0].view());
        let grads: Vec<&TensorRef> = outs[1..].iter().map(|t| t.view()).collect();
        let norm = self.device.backend_mut().sum_squares(&grads).map(f64::sqrt);
        let (loss, norm) = match (loss, norm) {
            (Ok(l), Ok(n)) => (l, n),
            (Err(e), _) | (_, Err(e)) => {
                self.free_all(outs);
                return Err(e);
            }
        };
        let lr = self.schedule.at(self.step);
        let skipped = !(loss.is_finite() && norm.is_finite());
        if skipped {
            log::warn!(
                "step {}: loss {loss} / gradient norm {norm} is not finite; update skipped",
                self.step + 1
            );
        } else {
            let args = self
                .opt
                .step_args(lr, self.step + 1, self.opt.clip_scale(norm));
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
            let r = self.device.backend_mut().adamw(&slots, &args);
            if let Err(e) = r {
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
            memory,
        })
    }

    /// PyTorch users learn to watch for "cached ≫ allocated"; say it once, here.
    fn warn_fragmentation(&mut self, m: &MemoryStats) {
        let f = m.fragmentation();
        if f > 0.10 && !self.fragmentation_warned {
            self.fragmentation_warned = true;
            log::warn!(
                "memory fragmentation {:.0}%: peak reserved {} for a peak of {} allocated; the difference is cached segments no tensor could use. The caching allocator keeps them for reuse; they count against --budget.",
                100.0 * f,
                crate::memory::format_bytes(m.peak_reserved_bytes),
                crate::memory::format_bytes(m.peak_allocated_bytes)
            );
        }
    }

    /// Loss on one batch without touching any state.
    pub fn loss(&mut self, batch: &Batch) -> Result<f32> {
        let outs = self.run(Kind::Eval, batch)?;
        let l = self.read_scalar(outs[0].view());
        self.free_all(outs);
        l
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
            let outs = self.run(Kind::Logits, &batch)?;
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
