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
    /// The value's position in its graph's value table, for indexing per-value
    /// vectors (below [`Graph::num_values`]).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A handle to one recorded node: its position in [`Graph::nodes`], which is
/// recording order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The node's position in [`Graph::nodes`].
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
    Computed {
        /// The node that produces it.
        node: NodeId,
        /// Which of the node's outputs it is (0 for the main result).
        index: usize,
    },
}

/// Which pass of a training step a node belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Recorded by model code: the computation of the loss. Autocast applies here.
    Forward,
    /// Recorded by [`autodiff`]: the loss seed and the gradient nodes. Autocast
    /// never applies here.
    Backward,
}

/// What a graph knows about one value, all fixed when the value is recorded.
#[derive(Clone, Debug)]
pub struct ValueInfo {
    /// Static shape.
    pub shape: Shape,
    /// Element type.
    pub dtype: DType,
    /// Whether it is a parameter, a data input or a node's output.
    pub kind: ValueKind,
}

/// One recorded application of an op to operand values.
#[derive(Clone, Debug)]
pub struct Node {
    /// The op, with its attributes.
    pub op: Op,
    /// Operand values, in the order the op's shape rule takes them.
    pub inputs: Vec<Value>,
    /// Values the node produces. Output 0 is the result model code sees; ops
    /// such as LayerNorm, attention and split have more (saved statistics, parts).
    pub outputs: Vec<Value>,
    /// Whether model code or [`autodiff`] recorded it.
    pub phase: Phase,
    /// The transformer block this node was recorded in, if any (recompute policies
    /// cut the graph at block boundaries).
    pub block: Option<u32>,
}

/// A traced computation: values with static shapes and dtypes, and the nodes
/// that compute them, in recording order. Model code records into it through the
/// op methods below, each of which runs the op's shape rule at once and returns
/// [`Error::Shape`] or [`Error::DType`] when the operands do not fit;
/// [`autodiff::backward`] then appends the gradient nodes.
///
/// ```
/// use headroom::graph::{autodiff, Graph};
/// use headroom::tensor::DType;
///
/// let mut g = Graph::new();
/// let x = g.input("x", [4, 3], DType::F32)?;
/// let w = g.param("w", [3, 2], DType::F32)?;
/// let y = g.matmul(x, w)?; // [4, 2]
/// let loss = g.mean(y, &[0, 1])?; // []
/// let grads = autodiff::backward(&mut g, loss, &[w])?;
/// assert_eq!(g.shape(grads[0]).dims(), &[3, 2]);
/// # Ok::<(), headroom::Error>(())
/// ```
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
    /// An empty graph: forward phase, no block, f32 parameters, autocast off.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Shape, dtype and origin of `v`, which must come from this graph: like every
    /// accessor taking a [`Value`] or [`NodeId`], it panics on an index past the end.
    pub fn info(&self, v: Value) -> &ValueInfo {
        &self.values[v.index()]
    }
    /// The static shape of `v`.
    pub fn shape(&self, v: Value) -> &Shape {
        &self.values[v.index()].shape
    }
    /// The dtype of `v`.
    pub fn dtype(&self, v: Value) -> DType {
        self.values[v.index()].dtype
    }
    /// Every node in recording order; a [`NodeId`] indexes this slice.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// The node `n`.
    pub fn node(&self, n: NodeId) -> &Node {
        &self.nodes[n.index()]
    }
    /// How many values the graph holds (parameters, inputs and node outputs);
    /// every [`Value`]'s index is below it.
    pub fn num_values(&self) -> usize {
        self.values.len()
    }
    /// Parameters in the order they were first recorded.
    pub fn params(&self) -> &[Value] {
        &self.params
    }
    /// Data inputs in the order they were first recorded.
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
    /// The name `v` was recorded under, if it is a parameter or an input.
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

    /// Sets the dtype [`Graph::param_dtype`] reports from now on (f64 for gradient
    /// checks); parameters already recorded keep theirs.
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

    /// The low-precision dtype autocast casts to, `None` while it is off.
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
    /// Under autocast, operands are first cast as the op's [`amp::CastRule`] says.
    pub fn apply(&mut self, op: Op, inputs: &[Value]) -> Result<Vec<Value>> {
        let low = match self.autocast {
            Some(low) if self.phase.unwrap_or(Phase::Forward) == Phase::Forward => low,
            _ => return self.record(op, inputs),
        };
        let dtypes: Vec<DType> = inputs.iter().map(|&v| self.dtype(v)).collect();
        let rule = op.cast_rule();
        let targets = amp::target_dtypes(rule, &dtypes, low);
        let op = if rule == amp::CastRule::F32LowOut {
            amp::with_low_output(op, low)
        } else {
            op
        };
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
    /// `a [.., M, K] @ b [.., K, N]` → `[.., M, N]`: [`Graph::matmul_t`] without
    /// transposes.
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
    /// `x * factor` elementwise: same shape and dtype as `x`.
    pub fn scale(&mut self, x: Value, factor: f64) -> Result<Value> {
        self.apply1(Op::Scale { factor }, &[x])
    }
    /// GELU (tanh approximation) elementwise: same shape and dtype as `x`.
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
    /// Under autocast the operands are f32 and the output is in the low dtype.
    pub fn layernorm(&mut self, x: Value, w: Value, b: Value, eps: f64) -> Result<Value> {
        self.apply1(Op::LayerNorm { eps, out: None }, &[x, w, b])
    }
    /// Causal self-attention: `qkv [B, T, 3C]` → `[B, T, C]`, one op with its own backward.
    pub fn attention(&mut self, qkv: Value, n_head: usize) -> Result<Value> {
        self.gqa_attention(qkv, n_head, n_head)
    }
    /// Causal grouped-query attention: `qkv [B, T, (H + 2K)·D]` (H query
    /// heads, then K key and K value heads) → `[B, T, H·D]`; each group of
    /// H/K query heads reads one key/value head, with no copies.
    pub fn gqa_attention(&mut self, qkv: Value, n_head: usize, n_kv_head: usize) -> Result<Value> {
        self.apply1(Op::Attention { n_head, n_kv_head }, &[qkv])
    }
    /// RMSNorm over the last dim with gain `w [C]`; the saved rstd is the
    /// node's second output. Under autocast the operands are f32 and the
    /// output is in the low dtype.
    pub fn rmsnorm(&mut self, x: Value, w: Value, eps: f64) -> Result<Value> {
        self.apply1(Op::RmsNorm { eps, out: None }, &[x, w])
    }
    /// SiLU elementwise (`x · σ(x)`).
    pub fn silu(&mut self, x: Value) -> Result<Value> {
        self.apply1(Op::Silu, &[x])
    }
    /// Rotary position embeddings on the q and k heads of `qkv [B, T, (H +
    /// 2K)·D]` (positions 0..T), v unchanged.
    pub fn rope(
        &mut self,
        qkv: Value,
        n_head: usize,
        n_kv_head: usize,
        theta: f64,
    ) -> Result<Value> {
        let op = Op::Rope {
            n_head,
            n_kv_head,
            theta,
            inverse: false,
        };
        self.apply1(op, &[qkv])
    }
    /// Softmax over the last dim: `[.., V]` → `[.., V]`.
    pub fn softmax(&mut self, x: Value) -> Result<Value> {
        self.apply1(Op::Softmax, &[x])
    }
    /// Mean cross-entropy of `logits [.., V]` against `targets [..] i32`: a scalar.
    pub fn cross_entropy(&mut self, logits: Value, targets: Value) -> Result<Value> {
        let classes = self.shape(logits).last();
        self.cross_entropy_classes(logits, targets, classes)
    }
    /// [`Graph::cross_entropy`] over the first `classes` logits of each row
    /// only; the rest (vocabulary padding) are no class and get no gradient.
    pub fn cross_entropy_classes(
        &mut self,
        logits: Value,
        targets: Value,
        classes: usize,
    ) -> Result<Value> {
        self.apply1(Op::CrossEntropy { classes }, &[logits, targets])
    }
    /// `x` viewed with `shape`, which must hold the same number of elements
    /// (row-major order kept). A view: no kernel runs and the result shares `x`'s
    /// storage.
    pub fn reshape(&mut self, x: Value, shape: impl Into<Shape>) -> Result<Value> {
        self.apply1(
            Op::Reshape {
                shape: shape.into(),
            },
            &[x],
        )
    }
    /// `x` with axes `a` and `b` swapped (`[.., A, .., B, ..]` → `[.., B, .., A, ..]`),
    /// copied into a new tensor.
    pub fn transpose(&mut self, x: Value, a: usize, b: usize) -> Result<Value> {
        self.apply1(Op::Transpose { a, b }, &[x])
    }
    /// `x` cut along `axis` into parts of `sizes` (positive, summing to that dim),
    /// one value per part in order.
    pub fn split(&mut self, x: Value, axis: usize, sizes: &[usize]) -> Result<Vec<Value>> {
        self.apply(
            Op::Split {
                axis,
                sizes: sizes.to_vec(),
            },
            &[x],
        )
    }
    /// `xs` joined along `axis`; they must share one float dtype and agree in every
    /// other dim.
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
    /// Mean over `axes` (strictly increasing; removed from the shape).
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
    /// `x` converted to the float dtype `to`, rounding to nearest-even. Each call
    /// records a new node (autocast's own casts are recorded once per value).
    pub fn cast(&mut self, x: Value, to: DType) -> Result<Value> {
        self.apply1(Op::Cast { to }, &[x])
    }
    /// A new tensor of `shape` and `dtype` with every element `value`; no operands.
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
