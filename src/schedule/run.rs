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

use super::step::{Choice, GraphKey, GraphKind, ProgramKey, StepCompiler};
use super::{execute_into, Bindings, Mode, Recompute};
use crate::backend::{Device, DeviceTensor, TensorRef};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::graph::ops::Op;
use crate::graph::{Graph, Value, ValueKind};
use crate::memory::{MemPhase, Tag, TensorKind};
use crate::nn::{Model, ParamSpec};
use crate::rng::Rng;
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

/// One parameter's tensors on the device, all f32 and of the parameter's shape.
pub struct ParamState {
    /// What the model declared.
    pub spec: ParamSpec,
    /// The master weights.
    pub value: DeviceTensor,
    /// AdamW's first moment.
    pub m: DeviceTensor,
    /// AdamW's second moment.
    pub v: DeviceTensor,
    /// The low-precision copy autocast's forward reads instead of casting
    /// the weights every step; AdamW keeps it current
    /// ([`StepCompiler::low_copies`]).
    pub shadow: Option<DeviceTensor>,
}

impl ParamState {
    /// Rewrites the low-precision copy from the master weights, after they
    /// were written other than by AdamW (at init, on resume).
    pub fn refresh_shadow(&self, device: &mut Device) -> Result<()> {
        if let Some(s) = &self.shadow {
            let cast = Op::Cast { to: s.dtype() };
            device
                .backend_mut()
                .run(&cast, &[self.value.view()], &[s.view()])?;
        }
        Ok(())
    }
}

/// The parameters a graph casts to low precision, each with the cast's output
/// value and dtype: the casts a shadow copy stands in for.
pub fn param_casts(g: &Graph) -> Vec<(&str, Value, DType)> {
    g.nodes()
        .iter()
        .filter_map(
            |n| match (&n.op, n.inputs.first().map(|&v| &g.info(v).kind)) {
                (Op::Cast { to }, Some(ValueKind::Param(name))) => {
                    Some((name.as_str(), n.outputs[0], *to))
                }
                _ => None,
            },
        )
        .collect()
}

/// Everything a model keeps on the device between steps.
pub struct ModelState {
    /// Every parameter, in `param_specs` order.
    pub params: Vec<ParamState>,
    /// The backend libraries' workspace, allocated once at setup; held so the
    /// block lives as long as the state.
    _workspace: Option<DeviceTensor>,
}

impl ModelState {
    /// Places each parameter (weights, then its two moments) and then
    /// `workspace_bytes` of library workspace. With `init`, weights are drawn
    /// from it and moments are zero; without (a simulation), tensors are only
    /// allocated.
    pub fn place(
        device: &mut Device,
        specs: Vec<ParamSpec>,
        shadows: &HashMap<String, DType>,
        mut init: Option<&mut Rng>,
        workspace_bytes: u64,
    ) -> Result<ModelState> {
        let weight = Tag::new(MemPhase::Setup, "param", TensorKind::Weight);
        let low = Tag::new(MemPhase::Setup, "param_low_copy", TensorKind::Weight);
        let state = Tag::new(MemPhase::Setup, "adamw_state", TensorKind::OptimizerState);
        let mut params = Vec::with_capacity(specs.len());
        for spec in specs {
            let values = init.as_deref_mut().map(|rng| spec.init_values(rng));
            let value = place(device, &spec, values, weight)?;
            let zeros = || {
                init.is_some()
                    .then(|| HostTensor::zeros(spec.shape.clone(), DType::F32))
            };
            let m = place(device, &spec, zeros(), state)?;
            let v = place(device, &spec, zeros(), state)?;
            let shadow = match shadows.get(&spec.name) {
                Some(&dt) => {
                    device.set_tag(low);
                    Some(device.alloc(spec.shape.clone(), dt)?)
                }
                None => None,
            };
            let p = ParamState {
                spec,
                value,
                m,
                v,
                shadow,
            };
            if init.is_some() {
                p.refresh_shadow(device)?;
            }
            params.push(p);
        }
        let workspace = match workspace_bytes {
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
        Ok(ModelState {
            params,
            _workspace: workspace,
        })
    }
}

fn place(
    device: &mut Device,
    spec: &ParamSpec,
    values: Option<HostTensor>,
    tag: Tag,
) -> Result<DeviceTensor> {
    device.set_tag(tag);
    match values {
        Some(h) => device.upload(&h),
        None => device.alloc(spec.shape.clone(), DType::F32),
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
    /// Its parameters, bound by name into every graph.
    pub params: &'a [ParamState],
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
        let key = ProgramKey {
            graph: GraphKey {
                kind,
                micro_batch: sub.batch,
                seq: sub.seq,
            },
            recompute,
            accumulate: !sinks.is_empty(),
        };
        let (g, prog) = self.compiler.program(self.model, key)?;
        // tokens, targets, loss seed: uploaded in this order, freed in it.
        let mut uploads = Owned::default();
        let bound = self.upload_inputs(&g, sub, batch, loss_scale, &mut uploads);
        let result = bound.and_then(|inputs| {
            let mut bind: Bindings = HashMap::new();
            for (v, i) in inputs {
                bind.insert(v, uploads.0[i].view());
            }
            for p in self.params {
                if let Some(v) = g.graph.lookup(&p.spec.name) {
                    bind.insert(v, p.value.view());
                }
            }
            // Autocast's casts of the weights: the low-precision copies.
            let by_name: HashMap<&str, &ParamState> = self
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
            execute_into(self.device, &g.graph, &prog, &bind, mode, sinks)
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
        let shape = Shape::new(&[sub.batch, sub.seq]);
        let mut inputs = Vec::with_capacity(3);
        // A simulation's batch is shapes only: the tensors are sizes, not data.
        let ids = |device: &mut Device, v: &[i32]| -> Result<DeviceTensor> {
            match v.is_empty() {
                true => device.alloc(shape.clone(), DType::I32),
                false => device.upload(&HostTensor::from_i32(shape.clone(), v)?),
            }
        };
        held.0.push(ids(self.device, &sub.tokens)?);
        inputs.push((g.tokens, held.0.len() - 1));
        if let Some(t) = g.targets {
            held.0.push(ids(self.device, &sub.targets)?);
            inputs.push((t, held.0.len() - 1));
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
    pub fn accumulate(
        &mut self,
        batch: &Batch,
        mut choice: Choice,
        loss_scale: f64,
        mut recover: Option<&mut Recover<'_>>,
    ) -> Result<Accumulated> {
        let b = batch.batch;
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
            }),
            Err(e) => {
                if let Some(g) = grads {
                    g.free(self.device);
                }
                Err(e)
            }
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
