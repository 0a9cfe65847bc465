//! How a case becomes a training graph and runs, shared by both harnesses so
//! that they draw, record, weight and execute a case the same way.

use std::collections::HashMap;

use headroom::graph::{Graph, Value};
use headroom::rng::Rng;
use headroom::schedule::{execute, Mode, Program};
use headroom::{DType, Device, HostTensor, Shape};

use super::case::Arg;

/// An operand's value: floats in f64 (stored in the graph's dtype when the
/// case runs), or ids.
#[derive(Clone)]
pub enum Input {
    F(Vec<f64>),
    Ids(HostTensor),
}

impl Input {
    /// The float values, to perturb or round; `None` for ids.
    pub fn floats_mut(&mut self) -> Option<&mut Vec<f64>> {
        match self {
            Input::F(x) => Some(x),
            Input::Ids(_) => None,
        }
    }

    /// The tensor to bind to operand `v` of `g`: floats rounded to its dtype.
    pub fn tensor(&self, g: &Graph, v: Value) -> HostTensor {
        match self {
            Input::F(x) => HostTensor::from_f64_as(g.shape(v).clone(), x, g.dtype(v)).unwrap(),
            Input::Ids(t) => t.clone(),
        }
    }
}

/// The operands' values in `args` order from `rng`: floats `scale` × a
/// standard normal, ids uniform below their bound.
pub fn draw(args: &[Arg], rng: &mut Rng, scale: f64) -> Vec<Input> {
    args.iter()
        .map(|a| match a {
            Arg::F(s) | Arg::Named(_, s) => Input::F(
                (0..Shape::new(s).numel())
                    .map(|_| scale * rng.normal())
                    .collect(),
            ),
            Arg::Ids(s, bound) => {
                let v: Vec<i32> = (0..Shape::new(s).numel())
                    .map(|_| rng.below(*bound as usize) as i32)
                    .collect();
                Input::Ids(HostTensor::from_i32(Shape::new(s), &v).unwrap())
            }
        })
        .collect()
}

/// Records the operands in `g`: floats as parameters in `dt` (named `x{i}`,
/// or their own name), ids as i32 inputs `x{i}`; model code records its
/// parameters in `dt` too. Returns every operand, and the float ones (which
/// get gradients) with their index in `args`.
pub fn record(g: &mut Graph, args: &[Arg], dt: DType) -> (Vec<Value>, Vec<(usize, Value)>) {
    g.set_param_dtype(dt);
    let mut vals = Vec::new();
    let mut wrt = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let v = match a {
            Arg::F(s) => g.param(&format!("x{i}"), Shape::new(s), dt).unwrap(),
            Arg::Named(n, s) => g.param(n, Shape::new(s), dt).unwrap(),
            Arg::Ids(s, _) => g
                .input(&format!("x{i}"), Shape::new(s), DType::I32)
                .unwrap(),
        };
        if !matches!(a, Arg::Ids(..)) {
            wrt.push((i, v));
        }
        vals.push(v);
    }
    (vals, wrt)
}

/// The loss Σₖ Σ outₖ ⊙ rₖ, so that every output element matters: rₖ is an
/// input of outₖ's shape and dtype (a loss is f32 even for low-precision
/// logits) whose values are standard normals from `rng`. Returns the loss
/// and each rₖ with its values.
pub fn weighted_loss(
    g: &mut Graph,
    outs: &[Value],
    rng: &mut Rng,
) -> (Value, Vec<(Value, Vec<f64>)>) {
    let mut loss = None;
    let mut weights = Vec::new();
    for (k, &o) in outs.iter().enumerate() {
        let s = g.shape(o).clone();
        let odt = g.dtype(o);
        let r = g.input(&format!("r{k}"), s.clone(), odt).unwrap();
        weights.push((r, (0..s.numel()).map(|_| rng.normal()).collect()));
        let p = g.mul(o, r).unwrap();
        let axes: Vec<usize> = (0..s.rank()).collect();
        let term = g.sum(p, &axes).unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => g.add(l, term).unwrap(),
        });
    }
    (loss.expect("a case has outputs"), weights)
}

/// Uploads each value's tensor, runs `prog` of `g` in train mode and returns
/// every output as f64; frees everything it allocated.
pub fn run_program(
    dev: &mut Device,
    g: &Graph,
    prog: &Program,
    inputs: &[(Value, HostTensor)],
) -> Vec<Vec<f64>> {
    let ts: Vec<_> = inputs
        .iter()
        .map(|(v, h)| (*v, dev.upload(h).unwrap()))
        .collect();
    let bind: HashMap<Value, _> = ts.iter().map(|(v, t)| (*v, t.view())).collect();
    let outs = execute(dev, g, prog, &bind, Mode::Train).unwrap();
    let res = outs
        .iter()
        .map(|t| dev.download(t.view()).unwrap().to_f64_vec())
        .collect();
    for t in outs {
        dev.free(t);
    }
    for (_, t) in ts {
        dev.free(t);
    }
    res
}
