//! The traced graph. Model code records ops into a [`Graph`]; every value has a
//! static shape and dtype, fixed when it is recorded.

pub mod amp;
pub mod autodiff;
pub mod ops;

use std::collections::HashMap;

pub use ops::Op;

use crate::error::{Error, Result};
use crate::tensor::{DType, Shape};

/// A handle to one value of a graph (a tensor that exists while a program runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub u32);

impl Value {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A trainable parameter, bound by name to persistent device memory.
    Param(String),
    /// Data fed per step (token ids, targets).
    Input(String),
    /// Output `index` of node `node`.
    Computed { node: NodeId, index: usize },
}

/// Which pass of a training step a node belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Forward,
    Backward,
}

#[derive(Clone, Debug)]
pub struct ValueInfo {
    pub shape: Shape,
    pub dtype: DType,
    pub kind: ValueKind,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
    pub phase: Phase,
    /// The transformer block this node was recorded in, if any (recompute policies
    /// cut the graph at block boundaries).
    pub block: Option<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    values: Vec<ValueInfo>,
    nodes: Vec<Node>,
    params: Vec<Value>,
    inputs: Vec<Value>,
    by_name: HashMap<String, Value>,
    phase: Option<Phase>,
    block: Option<u32>,
    param_dtype: Option<DType>,
    /// Low-precision dtype while autocast is on (forward recording only).
    autocast: Option<DType>,
    /// Casts already recorded: (value, dtype) → cast value.
    casts: HashMap<(Value, DType), Value>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn info(&self, v: Value) -> &ValueInfo {
        &self.values[v.index()]
    }
    pub fn shape(&self, v: Value) -> &Shape {
        &self.values[v.index()].shape
    }
    pub fn dtype(&self, v: Value) -> DType {
        self.values[v.index()].dtype
    }
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn node(&self, n: NodeId) -> &Node {
        &self.nodes[n.index()]
    }
    pub fn num_values(&self) -> usize {
        self.values.len()
    }
    /// Parameters in the order they were first recorded.
    pub fn params(&self) -> &[Value] {
        &self.params
    }
    pub fn inputs(&self) -> &[Value] {
        &self.inputs
    }
    /// The node that computes `v`, if `v` is not a parameter or input.
    pub fn producer(&self, v: Value) -> Option<NodeId> {
        match self.values[v.index()].kind {
            ValueKind::Computed { node, .. } => Some(node),
            _ => None,
        }
    }
    pub fn name_of(&self, v: Value) -> Option<&str> {
        match &self.values[v.index()].kind {
            ValueKind::Param(n) | ValueKind::Input(n) => Some(n),
            _ => None,
        }
    }

    /// A trainable parameter. Recording the same name twice returns the same value
    /// (that is how tied weights are spelled), provided the shape agrees.
    pub fn param(&mut self, name: &str, shape: impl Into<Shape>, dtype: DType) -> Result<Value> {
        self.named(name, shape.into(), dtype, true)
    }

    /// A per-step data input, such as token ids.
    pub fn input(&mut self, name: &str, shape: impl Into<Shape>, dtype: DType) -> Result<Value> {
        self.named(name, shape.into(), dtype, false)
    }

    fn named(&mut self, name: &str, shape: Shape, dtype: DType, param: bool) -> Result<Value> {
        if let Some(&v) = self.by_name.get(name) {
            let info = &self.values[v.index()];
            let same_kind = matches!(info.kind, ValueKind::Param(_)) == param;
            if info.shape != shape || info.dtype != dtype || !same_kind {
                return Err(Error::shape(
                    "param",
                    format!(
                        "'{name}' recorded twice with different shapes or kinds: {} {} vs {shape} {dtype}",
                        info.shape, info.dtype
                    ),
                ));
            }
            return Ok(v);
        }
        let v = Value(self.values.len() as u32);
        let kind = if param {
            self.params.push(v);
            ValueKind::Param(name.to_string())
        } else {
            self.inputs.push(v);
            ValueKind::Input(name.to_string())
        };
        self.values.push(ValueInfo { shape, dtype, kind });
        self.by_name.insert(name.to_string(), v);
        Ok(v)
    }

    /// The dtype layers record their parameters in: f32 master weights, unless a
    /// gradient check asks for f64.
    pub fn param_dtype(&self) -> DType {
        self.param_dtype.unwrap_or(DType::F32)
    }

    pub fn set_param_dtype(&mut self, dt: DType) {
        self.param_dtype = Some(dt);
    }

    /// Looks a parameter or input up by name.
    pub fn lookup(&self, name: &str) -> Option<Value> {
        self.by_name.get(name).copied()
    }

    /// Turns autocast on (`Some(bf16 or f16)`) or off for the ops recorded next.
    /// Autocast never applies to backward nodes.
    pub fn set_autocast(&mut self, low: Option<DType>) {
        self.autocast = low;
    }

    pub fn autocast(&self) -> Option<DType> {
        self.autocast
    }

    /// `x` cast to `to`, recorded once per graph however often it is asked for.
    fn cast_once(&mut self, x: Value, to: DType) -> Result<Value> {
        if let Some(&c) = self.casts.get(&(x, to)) {
            return Ok(c);
        }
        let c = self.record(Op::Cast { to }, &[x])?[0];
        self.casts.insert((x, to), c);
        Ok(c)
    }

    /// Records `op` applied to `inputs` and returns its outputs. The op's shape rule
    /// runs here, so a shape error points at the line of model code that caused it.
    /// Under autocast, operands are first cast as `amp::rule` says.
    pub fn apply(&mut self, op: Op, inputs: &[Value]) -> Result<Vec<Value>> {
        let low = match self.autocast {
            Some(low) if self.phase.unwrap_or(Phase::Forward) == Phase::Forward => low,
            _ => return self.record(op, inputs),
        };
        let dtypes: Vec<DType> = inputs.iter().map(|&v| self.dtype(v)).collect();
        let targets = amp::target_dtypes(amp::rule(&op), &dtypes, low);
        let mut cast = Vec::with_capacity(inputs.len());
        for (&v, t) in inputs.iter().zip(targets) {
            cast.push(match t {
                Some(to) => self.cast_once(v, to)?,
                None => v,
            });
        }
        self.record(op, &cast)
    }

    fn record(&mut self, op: Op, inputs: &[Value]) -> Result<Vec<Value>> {
        let metas: Vec<(&Shape, DType)> = inputs
            .iter()
            .map(|&v| {
                let i = &self.values[v.index()];
                (&i.shape, i.dtype)
            })
            .collect();
        let outs = op.infer(&metas)?;
        let node = NodeId(self.nodes.len() as u32);
        let outputs: Vec<Value> = outs
            .into_iter()
            .enumerate()
            .map(|(index, (shape, dtype))| {
                let v = Value(self.values.len() as u32);
                self.values.push(ValueInfo {
                    shape,
                    dtype,
                    kind: ValueKind::Computed { node, index },
                });
                v
            })
            .collect();
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
            phase: self.phase.unwrap_or(Phase::Forward),
            block: self.block,
        });
        Ok(outputs)
    }

    fn apply1(&mut self, op: Op, inputs: &[Value]) -> Result<Value> {
        Ok(self.apply(op, inputs)?[0])
    }

    pub(crate) fn set_phase(&mut self, p: Phase) {
        self.phase = Some(p);
    }

    /// Marks the nodes recorded from now on as belonging to transformer block `i`
    /// (`None` to leave blocks). Recompute policies use these marks.
    pub fn set_block(&mut self, i: Option<u32>) {
        self.block = i;
    }

    // ---- the op list, as model code calls it -------------------------------------

    /// `ids [..] i32`, `table [V, C]` → `[.., C]`.
    pub fn embedding(&mut self, ids: Value, table: Value) -> Result<Value> {
        self.apply1(Op::Embedding, &[ids, table])
    }
    /// `op(a) @ op(b)`, batched over leading dims; a 2-D operand is shared by the batch.
    pub fn matmul_t(&mut self, a: Value, b: Value, ta: bool, tb: bool) -> Result<Value> {
        self.apply1(Op::MatMul { ta, tb }, &[a, b])
    }
    pub fn matmul(&mut self, a: Value, b: Value) -> Result<Value> {
        self.matmul_t(a, b, false, false)
    }
    /// `a + b`, where `b`'s shape is `a`'s or a suffix of it (bias, positions, residual).
    pub fn add(&mut self, a: Value, b: Value) -> Result<Value> {
        self.apply1(Op::Add, &[a, b])
    }
    /// `a * b` elementwise, with the same broadcast rule as [`Graph::add`].
    pub fn mul(&mut self, a: Value, b: Value) -> Result<Value> {
        self.apply1(Op::Mul, &[a, b])
    }
    pub fn scale(&mut self, x: Value, factor: f64) -> Result<Value> {
        self.apply1(Op::Scale { factor }, &[x])
    }
    pub fn gelu(&mut self, x: Value) -> Result<Value> {
        self.apply1(Op::Gelu, &[x])
    }
    /// `gelu(x + b)` in one op (`b` broadcast as in [`Graph::add`]); its
    /// backward recomputes `x + b` instead of saving it.
    pub fn bias_gelu(&mut self, x: Value, b: Value) -> Result<Value> {
        self.apply1(Op::BiasGelu, &[x, b])
    }
    /// LayerNorm over the last dim. Returns the normalised output only; the saved
    /// mean and reciprocal std are outputs of the node for the backward pass.
    pub fn layernorm(&mut self, x: Value, w: Value, b: Value, eps: f64) -> Result<Value> {
        self.apply1(Op::LayerNorm { eps }, &[x, w, b])
    }
    /// Causal self-attention: `qkv [B, T, 3C]` → `[B, T, C]`, one op with its own backward.
    pub fn attention(&mut self, qkv: Value, n_head: usize) -> Result<Value> {
        self.apply1(Op::Attention { n_head }, &[qkv])
    }
    pub fn softmax(&mut self, x: Value) -> Result<Value> {
        self.apply1(Op::Softmax, &[x])
    }
    /// Mean cross-entropy of `logits [.., V]` against `targets [..] i32`: a scalar.
    pub fn cross_entropy(&mut self, logits: Value, targets: Value) -> Result<Value> {
        self.apply1(Op::CrossEntropy, &[logits, targets])
    }
    pub fn reshape(&mut self, x: Value, shape: impl Into<Shape>) -> Result<Value> {
        self.apply1(
            Op::Reshape {
                shape: shape.into(),
            },
            &[x],
        )
    }
    pub fn transpose(&mut self, x: Value, a: usize, b: usize) -> Result<Value> {
        self.apply1(Op::Transpose { a, b }, &[x])
    }
    pub fn split(&mut self, x: Value, axis: usize, sizes: &[usize]) -> Result<Vec<Value>> {
        self.apply(
            Op::Split {
                axis,
                sizes: sizes.to_vec(),
            },
            &[x],
        )
    }
    pub fn concat(&mut self, xs: &[Value], axis: usize) -> Result<Value> {
        self.apply1(Op::Concat { axis }, xs)
    }
    /// Sum over `axes` (removed from the shape).
    pub fn sum(&mut self, x: Value, axes: &[usize]) -> Result<Value> {
        self.apply1(
            Op::Sum {
                axes: axes.to_vec(),
            },
            &[x],
        )
    }
    pub fn mean(&mut self, x: Value, axes: &[usize]) -> Result<Value> {
        self.apply1(
            Op::Mean {
                axes: axes.to_vec(),
            },
            &[x],
        )
    }
    /// Inserts `axes` (positions in the output) so that the result has `shape`,
    /// repeating the data along them.
    pub fn expand(&mut self, x: Value, axes: &[usize], shape: impl Into<Shape>) -> Result<Value> {
        self.apply1(
            Op::Expand {
                axes: axes.to_vec(),
                shape: shape.into(),
            },
            &[x],
        )
    }
    pub fn cast(&mut self, x: Value, to: DType) -> Result<Value> {
        self.apply1(Op::Cast { to }, &[x])
    }
    pub fn fill(&mut self, value: f64, shape: impl Into<Shape>, dtype: DType) -> Result<Value> {
        self.apply1(
            Op::Fill {
                value,
                shape: shape.into(),
                dtype,
            },
            &[],
        )
    }
}
