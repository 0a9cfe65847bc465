//! Running compiled steps on a device: the model state placed once, one
//! micro-batch uploaded, run and released, and the micro-batch loop that
//! accumulates a step's gradients. The trainer and the planner's simulation
//! both run exactly this code, so the allocator sees the same sequence of
//! requests in a prediction as in the run it predicts.
//!
//! Ownership: every device tensor made here has one owner that frees it on
//! every path: the uploads of a micro-batch are held in one list, a step's
//! gradients in one [`Owned`], returned to the caller only on success.

use std::collections::HashMap;

pub use super::state::{param_casts, ModelState, ParamState};
use super::step::{Choice, GraphKey, GraphKind, ProgramKey, StepCompiler};
use super::{execute_with, Bindings, Mode, Recompute, Sink};
use crate::backend::profile::Span;
use crate::backend::{AdamWStep, Device, DeviceTensor, TensorRef};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::memory::{MemPhase, Tag, TensorKind};
use crate::nn::Model;
use crate::tensor::{DType, HostTensor, Shape};

/// Device tensors freed together by one owner.
#[derive(Default)]
pub struct Owned(pub Vec<DeviceTensor>);

impl Owned {
    /// Frees every tensor, in order.
    pub fn free(self, device: &mut Device) {
        for t in self.0 {
            device.free(t);
        }
    }

    /// The tensors' views, in order.
    pub fn views(&self) -> Vec<&TensorRef> {
        self.0.iter().map(|t| t.view()).collect()
    }
}

/// Where a step runs: the device, the compiled graphs, the model and its state.
pub struct Runner<'a> {
    /// The device every tensor lives on.
    pub device: &'a mut Device,
    /// Graphs and programs, compiled on first use.
    pub compiler: &'a mut StepCompiler,
    /// The model the graphs are traced from.
    pub model: &'a dyn Model,
    /// Its state: parameters bound by name into every graph, and the
    /// moments gradient release updates.
    pub state: &'a ModelState,
}

/// A step's accumulated gradients and what it took to get them.
pub struct Accumulated {
    /// The batch's mean loss.
    pub loss: f64,
    /// Each parameter's gradient, in parameter order.
    pub grads: Owned,
    /// The plan the last micro-batch ran under (after any recovery).
    pub choice: Choice,
    /// Out-of-memory recoveries inside the step.
    pub recoveries: u32,
    /// Under gradient release: Σg² over the gradients applied (the update
    /// already happened; `grads` is empty). `None`: not released.
    pub released: Option<Released>,
}

/// What gradient release did inside the backward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Released {
    /// Σg² over every gradient (loss scale included).
    pub sum_squares: f64,
    /// A gradient was not finite: it and every later one were not applied.
    pub stopped: bool,
}

/// Called when a micro-batch runs out of memory: `(device, error, the failed
/// choice, whether it was a retry of the same choice, attempts so far)` →
/// the choice to run the rest of the batch under, or the error that ends the
/// step.
pub type Recover<'r> = dyn FnMut(&mut Device, &Error, Choice, bool, u32) -> Result<Choice> + 'r;

impl Runner<'_> {
    /// Runs the graph of `kind` on the micro-batch `sub` of a batch of `batch`
    /// sequences, adding gradients into `sinks` when given; the outputs, in the
    /// program's order.
    pub fn run(
        &mut self,
        kind: GraphKind,
        sub: &Batch,
        batch: usize,
        recompute: Option<Recompute>,
        loss_scale: f64,
        sinks: &[&TensorRef],
    ) -> Result<Vec<DeviceTensor>> {
        self.run_with(kind, sub, batch, recompute, loss_scale, Sink::Add(sinks))
    }

    /// [`Runner::run`] with each gradient going to `sink`
    /// ([`Sink::Apply`]: gradient release).
    pub fn run_with(
        &mut self,
        kind: GraphKind,
        sub: &Batch,
        batch: usize,
        recompute: Option<Recompute>,
        loss_scale: f64,
        sink: Sink<'_>,
    ) -> Result<Vec<DeviceTensor>> {
        let (accumulate, release) = match &sink {
            Sink::Add(s) => (!s.is_empty(), false),
            Sink::Apply(_) => (false, true),
        };
        let key = ProgramKey {
            graph: GraphKey {
                kind,
                micro_batch: sub.batch,
                seq: sub.seq,
            },
            recompute,
            accumulate,
            release,
        };
        let (g, prog) = self.compiler.program(self.model, key)?;
        // The model's inputs, then the loss seed: uploaded in this order,
        // freed in it.
        let mut uploads = Owned::default();
        let bound = self.upload_inputs(&g, sub, batch, loss_scale, &mut uploads);
        let result = bound.and_then(|inputs| {
            let mut bind: Bindings = HashMap::new();
            for (v, i) in inputs {
                bind.insert(v, uploads.0[i].view());
            }
            for p in &self.state.params {
                if let Some(v) = g.graph.lookup(&p.spec.name) {
                    bind.insert(v, p.value.view());
                }
            }
            // Autocast's casts of the weights: the low-precision copies.
            let by_name: HashMap<&str, &ParamState> = self
                .state
                .params
                .iter()
                .map(|p| (p.spec.name.as_str(), p))
                .collect();
            for (name, out, dt) in param_casts(&g.graph) {
                let shadow = by_name.get(name).and_then(|p| p.shadow.as_ref());
                if let Some(s) = shadow.filter(|s| s.dtype() == dt) {
                    bind.insert(out, s.view());
                }
            }
            let mode = match kind {
                GraphKind::Train => Mode::Train,
                _ => Mode::Eval,
            };
            execute_with(self.device, &g.graph, &prog, &bind, mode, sink)
        });
        uploads.free(self.device);
        result
    }

    /// Uploads the micro-batch's inputs into `held`; each graph input with
    /// the index of its tensor there.
    fn upload_inputs(
        &mut self,
        g: &super::step::StepGraph,
        sub: &Batch,
        batch: usize,
        loss_scale: f64,
        held: &mut Owned,
    ) -> Result<Vec<(crate::graph::Value, usize)>> {
        self.device
            .set_tag(Tag::new(MemPhase::Data, "upload", TensorKind::Data));
        let mut inputs = Vec::with_capacity(g.inputs.len() + 1);
        for (name, v) in &g.inputs {
            // A simulation's batch is shapes only: the graph's input gives
            // the tensor's size.
            let t = match sub.is_shape_only() {
                true => self
                    .device
                    .alloc(g.graph.shape(*v).clone(), g.graph.dtype(*v))?,
                false => {
                    let h = sub.input(name).ok_or_else(|| {
                        Error::shape("batch", format!("it has no input `{name}`"))
                    })?;
                    if &h.shape != g.graph.shape(*v) || h.dtype != g.graph.dtype(*v) {
                        return Err(Error::shape(
                            "batch",
                            format!(
                                "input `{name}` is {} {}; the graph takes {} {}",
                                h.dtype,
                                h.shape,
                                g.graph.dtype(*v),
                                g.graph.shape(*v)
                            ),
                        ));
                    }
                    self.device.upload(h)?
                }
            };
            held.0.push(t);
            inputs.push((*v, held.0.len() - 1));
        }
        if let Some(s) = g.seed {
            // Each micro-batch's mean loss weighs mb/b of the batch's mean loss.
            let v = (sub.batch as f64 / batch as f64) * loss_scale;
            let h = HostTensor::from_f64_as(Shape::scalar(), &[v], DType::F32)?;
            held.0.push(self.device.upload(&h)?);
            inputs.push((s, held.0.len() - 1));
        }
        Ok(inputs)
    }

    /// The first output of a graph run, read as a scalar; every output is
    /// freed but the rest, which are returned.
    fn scalar_and_rest(&mut self, mut outs: Vec<DeviceTensor>) -> Result<(f32, Owned)> {
        let first = outs.remove(0);
        let value = self.device.download(first.view());
        self.device.free(first);
        let rest = Owned(outs);
        match value {
            Ok(h) => Ok((h.to_f32_vec()[0], rest)),
            Err(e) => {
                rest.free(self.device);
                Err(e)
            }
        }
    }

    /// The micro-batch loop of one training step: the batch in micro-batches
    /// of `choice`, the first one's gradients returned, the later ones' added
    /// into them. On running out of memory, `recover` (when given) picks the
    /// plan the failed micro-batch re-runs under; gradients of the micro-batches
    /// already done stay.
    ///
    /// Under a plan with gradient release and one micro-batch, `release`
    /// (the update's arguments) is applied to each parameter inside the
    /// backward instead ([`Runner::release_step`]).
    pub fn accumulate(
        &mut self,
        batch: &Batch,
        mut choice: Choice,
        loss_scale: f64,
        mut recover: Option<&mut Recover<'_>>,
        release: Option<&AdamWStep>,
    ) -> Result<Accumulated> {
        let b = batch.batch;
        if let Some(args) = release.filter(|_| choice.levers.gradient_release) {
            if choice.micro_batch == b {
                match self.release_step(batch, choice, loss_scale, args) {
                    Err(e @ Error::OutOfMemory { .. }) => {
                        // Nothing was applied (release_step says so otherwise):
                        // re-plan and take the step the ordinary way.
                        let Some(r) = recover.as_deref_mut() else {
                            return Err(e);
                        };
                        choice = r(self.device, &e, choice, false, 1)?;
                        let mut acc =
                            self.accumulate(batch, choice, loss_scale, Some(r), release)?;
                        acc.recoveries += 1;
                        return Ok(acc);
                    }
                    other => return other,
                }
            }
        }
        let mut grads: Option<Owned> = None;
        let mut loss = 0f64;
        let (mut done, mut attempts, mut retried_same) = (0, 0u32, false);
        let result = loop {
            if done >= b {
                break Ok(());
            }
            let mb = choice.micro_batch;
            let sub = batch.slice(done, mb);
            let sinks: Vec<TensorRef> = grads
                .as_ref()
                .map_or(vec![], |g| g.views().into_iter().cloned().collect());
            let sinks: Vec<&TensorRef> = sinks.iter().collect();
            let ran = self
                .run(
                    GraphKind::Train,
                    &sub,
                    b,
                    Some(choice.recompute),
                    loss_scale,
                    &sinks,
                )
                .and_then(|outs| self.scalar_and_rest(outs));
            match (ran, recover.as_deref_mut()) {
                (Ok((l, g)), _) => {
                    loss += l as f64 * mb as f64 / b as f64;
                    if grads.is_none() {
                        grads = Some(g);
                    }
                    done += mb;
                    retried_same = false;
                }
                (Err(e @ Error::OutOfMemory { .. }), Some(recover)) => {
                    attempts += 1;
                    match recover(self.device, &e, choice, retried_same, attempts) {
                        // A plan that moves the model state (offload) cannot
                        // continue this step: the caller moves the state and
                        // takes the step again (nothing was updated yet).
                        Ok(c) if c.levers.placement() != self.state.placement => break Err(e),
                        Ok(c) => {
                            retried_same = c == choice;
                            choice = c;
                        }
                        Err(fatal) => break Err(fatal),
                    }
                }
                (Err(e), _) => break Err(e),
            }
        };
        match result {
            Ok(()) => Ok(Accumulated {
                loss,
                grads: grads.unwrap_or_default(),
                choice,
                recoveries: attempts,
                released: None,
            }),
            Err(e) => {
                if let Some(g) = grads {
                    g.free(self.device);
                }
                Err(e)
            }
        }
    }

    /// The whole batch in one micro-batch, each parameter updated with
    /// `args` as soon as its gradient is final and its last reader has run,
    /// and the gradient freed. Σg² of each gradient is taken first: a
    /// non-finite one stops the updates there. An out-of-memory error before
    /// the first update is returned as it is (nothing changed, the caller
    /// may re-plan); after it, as [`Error::RecoveryFailed`]: the parameters
    /// are part-updated and only a checkpoint restores them.
    pub fn release_step(
        &mut self,
        batch: &Batch,
        choice: Choice,
        loss_scale: f64,
        args: &AdamWStep,
    ) -> Result<Accumulated> {
        let state: &ModelState = self.state;
        let mut rel = Released {
            sum_squares: 0.0,
            stopped: false,
        };
        let mut applied = 0usize;
        let mut apply = |dev: &mut Device, slot: usize, g: &TensorRef| -> Result<()> {
            let span = Span::new(MemPhase::Optimizer, "optimizer", "sum_squares");
            let ss = dev.timed(span, |b| b.sum_squares(&[g]))?;
            rel.sum_squares += ss;
            rel.stopped |= !ss.is_finite();
            if rel.stopped {
                return Ok(());
            }
            dev.set_tag(Tag::new(MemPhase::Optimizer, "adamw", TensorKind::Gradient));
            super::update::apply(dev, state, &[slot], &[g], args)?;
            applied += 1;
            Ok(())
        };
        let b = batch.batch;
        let sub = batch.slice(0, b);
        let kind = GraphKind::Train;
        let pol = Some(choice.recompute);
        let ran = self
            .run_with(kind, &sub, b, pol, loss_scale, Sink::Apply(&mut apply))
            .and_then(|outs| self.scalar_and_rest(outs));
        match ran {
            Ok((l, rest)) => {
                rest.free(self.device);
                Ok(Accumulated {
                    loss: l as f64,
                    grads: Owned::default(),
                    choice,
                    recoveries: 0,
                    released: Some(rel),
                })
            }
            Err(e) if applied == 0 => Err(e),
            Err(e) => Err(Error::RecoveryFailed {
                step: 0,
                attempts: 0,
                last: format!(
                    "{e}, under gradient release after {applied} of {} parameters were updated; resume from the last checkpoint (the planner uses release only where nothing else fits: give it more memory, or set TrainConfig::gradient_release false)",
                    state.params.len()
                ),
            }),
        }
    }

    /// The mean loss of `batch` in micro-batches of `micro_batch`, no state
    /// touched.
    pub fn mean_loss(&mut self, batch: &Batch, micro_batch: usize) -> Result<f32> {
        let mut loss = 0f64;
        for start in (0..batch.batch).step_by(micro_batch) {
            let sub = batch.slice(start, micro_batch);
            let outs = self.run(GraphKind::Eval, &sub, batch.batch, None, 1.0, &[])?;
            let (l, rest) = self.scalar_and_rest(outs)?;
            rest.free(self.device);
            loss += l as f64 * micro_batch as f64 / batch.batch as f64;
        }
        Ok(loss as f32)
    }
}
