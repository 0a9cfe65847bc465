//! Step compilation: a model traced into the graph of one step (training,
//! evaluation or logits), lowered into a program per recompute policy, and
//! both cached. The trainer and the planner's simulations share this code, so
//! the program a plan was simulated with is the program that runs.
//!
//! A graph depends on what is traced (kind, micro-batch, sequence length) and
//! on the precision; never on the recompute policy, which is a lowering choice,
//! nor on the whole batch, whose share of the loss is an input (`loss_seed`).

use std::collections::HashMap;
use std::rc::Rc;

use super::levers::Levers;
use super::run::param_casts;
use super::{lower_with, LowerOptions, Program, Recompute};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::graph::amp::Precision;
use crate::graph::ops::stat_dtype;
use crate::graph::{autodiff, Graph, Op, Phase, Value};
use crate::nn::{Model, Objective};
use crate::tensor::{DType, Shape};

/// What the planner decides for a step shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Choice {
    /// Sequences per micro-batch; a step accumulates gradients over
    /// `batch / micro_batch` micro-batches.
    pub micro_batch: usize,
    /// The recompute policy every micro-batch is lowered with.
    pub recompute: Recompute,
    /// Where the model state lives and when it is updated.
    #[serde(default)]
    pub levers: Levers,
}

/// What a step graph computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GraphKind {
    /// Loss and every parameter's gradient.
    Train,
    /// The loss only.
    Eval,
    /// The model's named outputs only ([`Model::outputs`]): inference and
    /// sampling.
    Infer,
}

/// One distinct step graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GraphKey {
    /// What the graph computes.
    pub kind: GraphKind,
    /// Sequences the graph takes at once.
    pub micro_batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
}

/// One distinct program: a graph lowered under a recompute policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProgramKey {
    /// The graph lowered.
    pub graph: GraphKey,
    /// The recompute policy (`None` for graphs without a backward pass).
    pub recompute: Option<Recompute>,
    /// Gradients add into tensors the caller passes (every micro-batch but
    /// the first) instead of being returned.
    pub accumulate: bool,
    /// Gradient release: each gradient goes to the caller (which updates its
    /// parameter) once final and once its parameter is read for the last time.
    pub release: bool,
}

/// A traced step graph and the values a runner binds and reads.
pub struct StepGraph {
    /// The graph, autodiff and autocast applied.
    pub graph: Graph,
    /// The model's inputs by name ([`Model::inputs`], each `[mb, ..]`);
    /// inference graphs leave out the loss-only ones.
    pub inputs: Vec<(String, Value)>,
    /// Train graphs: the scalar the backward pass starts from (the micro-batch's
    /// share of the mean loss, times the loss scale).
    pub seed: Option<Value>,
    /// `loss []` for train and eval graphs; the model's named outputs for
    /// inference graphs. The program returns them first, in this order.
    pub outputs: Vec<(String, Value)>,
    /// Train graphs: the gradient of each parameter, in `param_specs` order.
    pub grads: Vec<Value>,
    /// Train graphs: each parameter's value, in `param_specs` order.
    pub params: Vec<Value>,
}

/// Traces and lowers a model's step graphs on demand, each distinct graph and
/// program once.
pub struct StepCompiler {
    precision: Precision,
    graphs: HashMap<GraphKey, Rc<StepGraph>>,
    programs: HashMap<ProgramKey, Rc<Program>>,
    low_copies: Option<Rc<HashMap<String, DType>>>,
}

impl StepCompiler {
    /// A compiler whose graphs autocast to `precision` (`Auto` traces f32).
    pub fn new(precision: Precision) -> StepCompiler {
        StepCompiler {
            precision,
            graphs: HashMap::new(),
            programs: HashMap::new(),
            low_copies: None,
        }
    }

    /// Which parameters get a low-precision copy, and of which dtype: those
    /// the model's forward casts under autocast, read off a one-token
    /// evaluation graph (which weights are cast does not depend on the
    /// shapes; this graph is not kept). Empty in f32, and when the model
    /// cannot be traced at that size: its casts then run every step.
    pub fn low_copies(&mut self, model: &dyn Model) -> Rc<HashMap<String, DType>> {
        if let Some(c) = &self.low_copies {
            return c.clone();
        }
        let key = GraphKey {
            kind: GraphKind::Eval,
            micro_batch: 1,
            seq: 1,
        };
        let copies = match self.precision.low_dtype() {
            None => HashMap::new(),
            Some(_) => match trace(model, key, self.precision) {
                Ok(sg) => param_casts(&sg.graph)
                    .into_iter()
                    .map(|(n, _, d)| (n.to_string(), d))
                    .collect(),
                Err(e) => {
                    log::debug!("no low-precision weight copies: {e}");
                    HashMap::new()
                }
            },
        };
        let copies = Rc::new(copies);
        self.low_copies = Some(copies.clone());
        copies
    }

    /// Graphs traced so far (each distinct one once).
    pub fn graphs_traced(&self) -> usize {
        self.graphs.len()
    }

    /// The graph of `key`, traced now if not yet traced.
    pub fn graph(&mut self, model: &dyn Model, key: GraphKey) -> Result<Rc<StepGraph>> {
        if let Some(g) = self.graphs.get(&key) {
            return Ok(g.clone());
        }
        log::debug!("tracing {key:?}");
        let g = Rc::new(trace(model, key, self.precision)?);
        self.graphs.insert(key, g.clone());
        Ok(g)
    }

    /// The program of `key`, lowered now if not yet lowered, with its graph.
    pub fn program(
        &mut self,
        model: &dyn Model,
        key: ProgramKey,
    ) -> Result<(Rc<StepGraph>, Rc<Program>)> {
        let g = self.graph(model, key.graph)?;
        if let Some(p) = self.programs.get(&key) {
            return Ok((g, p.clone()));
        }
        let p = Rc::new(lower(&g, key.recompute, key.accumulate, key.release)?);
        self.programs.insert(key, p.clone());
        Ok((g, p))
    }

    /// Transformer blocks the model records (recompute policies cut at them).
    pub fn count_blocks(&mut self, model: &dyn Model, seq: usize) -> Result<usize> {
        let key = GraphKey {
            kind: GraphKind::Infer,
            micro_batch: 1,
            seq,
        };
        let g = self.graph(model, key)?;
        Ok(g.graph
            .nodes()
            .iter()
            .filter_map(|n| n.block)
            .max()
            .map_or(0, |b| b as usize + 1))
    }

    /// FLOPs of one step of `batch` sequences under `choice`, recompute included.
    pub fn step_flops(
        &mut self,
        model: &dyn Model,
        batch: usize,
        seq: usize,
        choice: Choice,
    ) -> Result<u64> {
        let key = ProgramKey {
            graph: GraphKey {
                kind: GraphKind::Train,
                micro_batch: choice.micro_batch,
                seq,
            },
            recompute: Some(choice.recompute),
            accumulate: false,
            release: false,
        };
        let (_, p) = self.program(model, key)?;
        Ok(p.flops * (batch / choice.micro_batch) as u64)
    }
}

fn trace(model: &dyn Model, key: GraphKey, precision: Precision) -> Result<StepGraph> {
    let GraphKey {
        kind,
        micro_batch: mb,
        seq: t,
    } = key;
    let mut g = Graph::new();
    g.set_autocast(precision.low_dtype());
    let mut inputs = Vec::new();
    let mut read = Vec::new();
    for spec in model.inputs(t) {
        if kind == GraphKind::Infer && spec.loss_only {
            continue;
        }
        let shape: Vec<usize> = std::iter::once(mb).chain(spec.shape.clone()).collect();
        let v = g.input(&spec.name, shape, spec.dtype)?;
        read.push(v);
        inputs.push((spec.name, v));
    }
    let blank = |g: Graph, inputs, outputs| StepGraph {
        graph: g,
        inputs,
        seed: None,
        outputs,
        grads: vec![],
        params: vec![],
    };
    if kind == GraphKind::Infer {
        let outs = model.outputs(&mut g, &read)?;
        return Ok(blank(g, inputs, outs));
    }
    let objective = model.objective(&mut g, &read)?;
    g.set_autocast(None);
    // The loss a general objective recorded, in f32 (f64 in f64 graphs)
    // whatever autocast made of it: the seed and the report read it so.
    let scalar = |g: &mut Graph, loss: Value| -> Result<Value> {
        let want = stat_dtype(g.dtype(loss));
        match g.dtype(loss) == want {
            true => Ok(loss),
            false => g.cast(loss, want),
        }
    };
    if kind == GraphKind::Eval {
        let loss = match objective {
            Objective::Loss(l) => scalar(&mut g, l)?,
            Objective::CrossEntropy {
                logits,
                targets,
                classes,
            } => g.cross_entropy_classes(logits, targets, classes)?,
        };
        return Ok(blank(g, inputs, vec![("loss".into(), loss)]));
    }
    let wrt = model
        .param_specs()
        .iter()
        .map(|p| p.record(&mut g))
        .collect::<Result<Vec<_>>>()?;
    let (loss, s, grads) = match objective {
        Objective::Loss(l) => {
            let loss = scalar(&mut g, l)?;
            let s = g.input("loss_seed", Shape::scalar(), g.dtype(loss))?;
            let grads = autodiff::backward_from(&mut g, loss, &wrt, s)?;
            (loss, s, grads)
        }
        Objective::CrossEntropy {
            logits,
            targets,
            classes,
        } => {
            // The loss and dlogits in one backward-phase node that reads the
            // seed: the logits are read once, and dlogits takes their memory
            // (they die there).
            let stat = stat_dtype(g.dtype(logits));
            let s = g.input("loss_seed", Shape::scalar(), stat)?;
            g.set_phase(Phase::Backward);
            let fused = g.apply(Op::CrossEntropyFused { classes }, &[logits, targets, s])?;
            let (loss, dlogits) = (fused[0], fused[1]);
            let grads = autodiff::backward_from_grads(&mut g, &[(logits, dlogits)], &wrt)?;
            (loss, s, grads)
        }
    };
    Ok(StepGraph {
        graph: g,
        inputs,
        seed: Some(s),
        outputs: vec![("loss".into(), loss)],
        grads,
        params: wrt,
    })
}

fn lower(
    g: &StepGraph,
    recompute: Option<Recompute>,
    accumulate: bool,
    release: bool,
) -> Result<Program> {
    let sunk = accumulate || release;
    let mut outputs: Vec<Value> = g.outputs.iter().map(|o| o.1).collect();
    if !sunk {
        outputs.extend(&g.grads);
    }
    // Under release a parameter changes at its gradient's accumulate: every
    // read of it (and of its low-precision casts) must come first.
    let hold = match release {
        false => vec![],
        true => {
            g.params
                .iter()
                .map(|&p| {
                    let casts = g.graph.nodes().iter().filter(|n| {
                        matches!(n.op, Op::Cast { .. }) && n.inputs.first() == Some(&p)
                    });
                    std::iter::once(p)
                        .chain(casts.flat_map(|n| n.outputs.iter().copied()))
                        .collect()
                })
                .collect()
        }
    };
    lower_with(
        &g.graph,
        &outputs,
        &LowerOptions {
            recompute,
            accumulate: if sunk { g.grads.clone() } else { vec![] },
            gradients: g.grads.clone(),
            hold,
        },
    )
}
