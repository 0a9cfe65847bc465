//! The op list. Each family file holds, for its ops, the shape rule (`infer`),
//! the vector-Jacobian rule (`vjp`) that autodiff calls, and the shape → kernel
//! parameter helpers every backend uses ([`matmul::dims`], [`attention::btc`],
//! [`reduce::reduce_plan`], [`shape::slices`], ...). The cpu reference kernels,
//! which every other backend is tested against, live in
//! [`backend::cpu::ops`](crate::backend::cpu::ops) under the same family names.
//!
//! To add an op: add a variant here, give it a family file (or a place in one)
//! with its `infer` and `vjp`, route it in the `match`es of `impl Op` below; write its
//! cpu kernel in the same family under `backend::cpu::ops` and map its operands
//! in that family's `run`; and add its gradient check to `tests/gradcheck.rs`.

pub mod attention;
pub mod cast;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod matmul;
pub mod reduce;
pub mod shape;
pub mod softmax;

use crate::error::{Error, Result};
use crate::graph::{Graph, Value};
use crate::tensor::{DType, Shape};

/// Every op a graph can record, with its attributes. Operands and outputs are
/// listed as `name [shape]`; `..` stands for any leading dims. The float operands
/// of one op share one dtype, saved statistics (`mean`, `rstd`, `lse`) aside. The
/// `*Backward` ops are recorded only by the vector-Jacobian rules.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `ids [..] i32`, `table [V, C]` → `[.., C]`: the table's rows gathered by id.
    Embedding,
    /// `ids [..] i32`, `dy [.., C]` → `dtable [vocab, C]`: each row of `dy` added
    /// into the row of its id.
    EmbeddingBackward {
        /// Rows of the table (`V`), which no operand carries.
        vocab: usize,
    },
    /// `op(a) @ op(b)`: `[.., M, K] @ [.., K, N]` → `[.., M, N]` after the
    /// transposes, batched over leading dims; a 2-D operand is shared by the batch.
    MatMul {
        /// Use `aᵀ` (the last two dims of `a` swapped).
        ta: bool,
        /// Use `bᵀ` (the last two dims of `b` swapped).
        tb: bool,
    },
    /// `a + b` in `a`'s shape, where `b`'s shape is a suffix of `a`'s (broadcast).
    Add,
    /// `a * b` elementwise, with the broadcast rule of [`Op::Add`].
    Mul,
    /// `x * factor`, same shape.
    Scale {
        /// The constant multiplier.
        factor: f64,
    },
    /// GELU (tanh form) elementwise, same shape.
    Gelu,
    /// `x`, `dy` (one shape) → `dx = gelu'(x) · dy`.
    GeluBackward,
    /// `gelu(x + b)`, `b` broadcast: the MLP's bias and activation in one kernel.
    BiasGelu,
    /// `x`, `b` (broadcast), `dy` → `dh`, the gradient of `x + b` in `x`'s shape;
    /// the kernel recomputes `x + b`.
    BiasGeluBackward,
    /// `x [.., C]`, `w [C]`, `b [C]` → `y [.., C]`, `mean [..]`, `rstd [..]`; the
    /// saved statistics are f32 (f64 in f64 graphs).
    LayerNorm {
        /// Added to the variance before its reciprocal square root is taken.
        eps: f64,
    },
    /// `dy [.., C]`, `x [.., C]`, `w [C]`, `mean [..]`, `rstd [..]` →
    /// `dx [.., C]`, `dw [C]`, `db [C]`.
    LayerNormBackward,
    /// Causal self-attention: `qkv [B, T, 3C]` → `out [B, T, C]`, `lse [B, H, T]`
    /// (each query row's log-sum-exp, saved for the backward; f32, or f64 in f64
    /// graphs).
    Attention {
        /// Number of heads `H`; `C` must divide by it.
        n_head: usize,
    },
    /// `qkv`, `out`, `lse`, `dout [B, T, C]` → `dqkv [B, T, 3C]`, recomputing the
    /// probabilities from `qkv` and `lse`.
    AttentionBackward {
        /// Number of heads `H`, as in the forward op.
        n_head: usize,
    },
    /// Softmax over the last dim, same shape.
    Softmax,
    /// `y` (the softmax output), `dy` → `dx = y ⊙ (dy − Σ y dy)` per row.
    SoftmaxBackward,
    /// `logits [.., V]`, `targets [..] i32` → the mean loss `[]`; the softmax is
    /// fused in and never stored.
    CrossEntropy,
    /// `logits [.., V]`, `targets [..] i32`, `dloss []` → `dlogits [.., V]`.
    CrossEntropyBackward,
    /// The operand viewed with a new shape of the same element count; no kernel
    /// runs (see [`Op::is_alias`]).
    Reshape {
        /// The output shape.
        shape: Shape,
    },
    /// The operand with axes `a` and `b` swapped, copied.
    Transpose {
        /// One axis to swap.
        a: usize,
        /// The other axis to swap.
        b: usize,
    },
    /// One output per entry of `sizes`: the operand cut along `axis`, in order.
    Split {
        /// The axis cut.
        axis: usize,
        /// Each part's extent along `axis`: positive, summing to the operand's.
        sizes: Vec<usize>,
    },
    /// Any number of operands (at least one) joined along `axis`; all other dims
    /// must agree.
    Concat {
        /// The axis joined along.
        axis: usize,
    },
    /// Sum over `axes`, which are removed from the shape.
    Sum {
        /// The axes reduced, strictly increasing.
        axes: Vec<usize>,
    },
    /// Mean over `axes`, which are removed from the shape.
    Mean {
        /// The axes reduced, strictly increasing.
        axes: Vec<usize>,
    },
    /// The adjoint of [`Op::Sum`]: the operand repeated along new `axes` so that
    /// it has `shape`.
    Expand {
        /// Positions in `shape` the operand lacks, strictly increasing.
        axes: Vec<usize>,
        /// The output shape; without `axes` it is the operand's shape.
        shape: Shape,
    },
    /// The operand converted to the float dtype `to`, rounded to nearest-even.
    Cast {
        /// The target dtype (a float).
        to: DType,
    },
    /// No operands: a new tensor with every element `value`.
    Fill {
        /// The value of every element (rounded to `dtype`).
        value: f64,
        /// The output shape.
        shape: Shape,
        /// The output dtype.
        dtype: DType,
    },
}

/// Shape and dtype of one operand, as the shape rules see it.
pub type Meta<'a> = (&'a Shape, DType);

impl Op {
    /// The op's snake_case name, as error messages and memory tags print it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Embedding => "embedding",
            Op::EmbeddingBackward { .. } => "embedding_backward",
            Op::MatMul { .. } => "matmul",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Scale { .. } => "scale",
            Op::Gelu => "gelu",
            Op::GeluBackward => "gelu_backward",
            Op::BiasGelu => "bias_gelu",
            Op::BiasGeluBackward => "bias_gelu_backward",
            Op::LayerNorm { .. } => "layernorm",
            Op::LayerNormBackward => "layernorm_backward",
            Op::Attention { .. } => "attention",
            Op::AttentionBackward { .. } => "attention_backward",
            Op::Softmax => "softmax",
            Op::SoftmaxBackward => "softmax_backward",
            Op::CrossEntropy => "cross_entropy",
            Op::CrossEntropyBackward => "cross_entropy_backward",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Split { .. } => "split",
            Op::Concat { .. } => "concat",
            Op::Sum { .. } => "sum",
            Op::Mean { .. } => "mean",
            Op::Expand { .. } => "expand",
            Op::Cast { .. } => "cast",
            Op::Fill { .. } => "fill",
        }
    }

    /// True when the output is a view of the input's memory (no kernel runs).
    pub fn is_alias(&self) -> bool {
        matches!(self, Op::Reshape { .. })
    }

    /// `(input, output)` when the output may take over the input's memory if
    /// the input dies at this node (the executor decides). Only for ops whose
    /// kernels, on every backend, read each element of that input before writing
    /// the same element of the output and never read it again. The cross-entropy
    /// backward's logits are a language model's largest activation, and its
    /// dlogits the same size: one buffer serves both.
    pub fn donates(&self) -> Option<(usize, usize)> {
        match self {
            Op::CrossEntropyBackward => Some((0, 0)),
            _ => None,
        }
    }

    /// The shape rule: output shapes and dtypes from the operands'.
    pub fn infer(&self, ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
        let name = self.name();
        let want = self.arity();
        if let Some(n) = want {
            if ins.len() != n {
                return Err(Error::shape(
                    name,
                    format!("takes {n} operands, got {}", ins.len()),
                ));
            }
        }
        match self {
            Op::Embedding => embedding::infer(ins),
            Op::EmbeddingBackward { vocab } => embedding::infer_backward(ins, *vocab),
            Op::MatMul { ta, tb } => matmul::infer(ins, *ta, *tb),
            Op::Add | Op::Mul | Op::BiasGelu => elementwise::infer_broadcast(name, ins),
            Op::BiasGeluBackward => elementwise::infer_bias_gelu_backward(ins),
            Op::Scale { .. } | Op::Gelu | Op::Softmax => elementwise::infer_unary(name, ins),
            Op::GeluBackward | Op::SoftmaxBackward => elementwise::infer_same(name, ins),
            Op::LayerNorm { .. } => layernorm::infer(ins),
            Op::LayerNormBackward => layernorm::infer_backward(ins),
            Op::Attention { n_head } => attention::infer(ins, *n_head),
            Op::AttentionBackward { n_head } => attention::infer_backward(ins, *n_head),
            Op::CrossEntropy => cross_entropy::infer(ins),
            Op::CrossEntropyBackward => cross_entropy::infer_backward(ins),
            Op::Reshape { shape } => shape::infer_reshape(ins, shape),
            Op::Transpose { a, b } => shape::infer_transpose(ins, *a, *b),
            Op::Split { axis, sizes } => shape::infer_split(ins, *axis, sizes),
            Op::Concat { axis } => shape::infer_concat(ins, *axis),
            Op::Sum { axes } | Op::Mean { axes } => reduce::infer_reduce(name, ins, axes),
            Op::Expand { axes, shape } => reduce::infer_expand(ins, axes, shape),
            Op::Cast { to } => cast::infer(ins, *to),
            Op::Fill { shape, dtype, .. } => Ok(vec![(shape.clone(), *dtype)]),
        }
    }

    fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Fill { .. } => 0,
            Op::Scale { .. }
            | Op::Gelu
            | Op::Softmax
            | Op::Attention { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Split { .. }
            | Op::Sum { .. }
            | Op::Mean { .. }
            | Op::Expand { .. }
            | Op::Cast { .. } => 1,
            Op::Embedding
            | Op::EmbeddingBackward { .. }
            | Op::MatMul { .. }
            | Op::Add
            | Op::Mul
            | Op::GeluBackward
            | Op::SoftmaxBackward
            | Op::BiasGelu
            | Op::CrossEntropy => 2,
            Op::BiasGeluBackward => 3,
            Op::LayerNorm { .. } | Op::CrossEntropyBackward => 3,
            Op::AttentionBackward { .. } => 4,
            Op::LayerNormBackward => 5,
            Op::Concat { .. } => return None,
        })
    }

    /// The vector-Jacobian rule: records the nodes that turn the output gradients
    /// `douts` (one per output, `None` where no gradient flows) into one gradient
    /// per input (`None` for inputs that take none, such as token ids).
    pub fn vjp(
        &self,
        g: &mut Graph,
        ins: &[Value],
        outs: &[Value],
        douts: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        // Ops whose extra outputs are saved statistics take their gradient from the
        // first output only.
        let dy = || douts[0].ok_or_else(|| Error::Internal("vjp called without a gradient".into()));
        match self {
            Op::Embedding => embedding::vjp(g, ins, dy()?),
            Op::MatMul { ta, tb } => matmul::vjp(g, ins, dy()?, *ta, *tb),
            Op::Add => elementwise::vjp_add(g, ins, dy()?),
            Op::Mul => elementwise::vjp_mul(g, ins, dy()?),
            Op::Scale { factor } => Ok(vec![Some(g.scale(dy()?, *factor)?)]),
            Op::Gelu => elementwise::vjp_gelu(g, ins, dy()?),
            Op::BiasGelu => elementwise::vjp_bias_gelu(g, ins, dy()?),
            Op::LayerNorm { .. } => layernorm::vjp(g, ins, outs, dy()?),
            Op::Attention { n_head } => attention::vjp(g, ins, outs, dy()?, *n_head),
            Op::Softmax => softmax::vjp(g, outs, dy()?),
            Op::CrossEntropy => cross_entropy::vjp(g, ins, dy()?),
            Op::Reshape { .. } => {
                let s = g.shape(ins[0]).clone();
                Ok(vec![Some(g.reshape(dy()?, s)?)])
            }
            Op::Transpose { a, b } => Ok(vec![Some(g.transpose(dy()?, *a, *b)?)]),
            Op::Split { axis, .. } => shape::vjp_split(g, ins, outs, douts, *axis),
            Op::Concat { axis } => shape::vjp_concat(g, ins, dy()?, *axis),
            Op::Sum { axes } => reduce::vjp_sum(g, ins, dy()?, axes, false),
            Op::Mean { axes } => reduce::vjp_sum(g, ins, dy()?, axes, true),
            Op::Expand { axes, .. } => Ok(vec![Some(g.sum(dy()?, axes)?)]),
            Op::Cast { .. } => {
                let from = g.dtype(ins[0]);
                Ok(vec![Some(g.cast(dy()?, from)?)])
            }
            Op::Fill { .. } => Ok(vec![]),
            Op::EmbeddingBackward { .. }
            | Op::GeluBackward
            | Op::BiasGeluBackward
            | Op::LayerNormBackward
            | Op::AttentionBackward { .. }
            | Op::SoftmaxBackward
            | Op::CrossEntropyBackward => Err(Error::Unsupported {
                backend: "autodiff",
                what: format!("the gradient of {} (second derivatives)", self.name()),
                hint: "differentiate the forward graph once",
            }),
        }
    }

    /// Ops whose outputs recompute cheaply (elementwise, norms, views, reductions):
    /// the "cheap" recompute policy drops only their outputs, as Megatron's
    /// selective recompute keeps the matmul outputs.
    pub fn is_cheap(&self) -> bool {
        !matches!(
            self,
            Op::MatMul { .. }
                | Op::Attention { .. }
                | Op::AttentionBackward { .. }
                | Op::Embedding
                | Op::EmbeddingBackward { .. }
                | Op::CrossEntropy
                | Op::CrossEntropyBackward
        )
    }

    /// Floating-point operations of one run of the op on operands of shapes `ins`
    /// with outputs of shapes `outs`: the planner's cost model.
    pub fn flops(&self, ins: &[&Shape], outs: &[&Shape]) -> u64 {
        let out_n = outs.first().map_or(0, |s| s.numel()) as u64;
        let in_n = ins.first().map_or(0, |s| s.numel()) as u64;
        match self {
            Op::MatMul { ta, tb } => match matmul::dims(ins[0], ins[1], *ta, *tb) {
                Ok((d, _)) => 2 * (d.batch * d.m * d.n * d.k) as u64,
                Err(_) => 0,
            },
            Op::Attention { n_head } | Op::AttentionBackward { n_head } => {
                let (b, t, c) = attention::btc(ins[0], *n_head).unwrap_or((0, 0, 0));
                // Causal: half of the T×T scores, each a dot of length C/H for
                // QKᵀ and for PV; the backward pass does about 2.5 times that.
                let fwd = 2 * (b * t * t * c) as u64;
                if matches!(self, Op::Attention { .. }) {
                    fwd
                } else {
                    fwd * 5 / 2
                }
            }
            Op::CrossEntropy | Op::CrossEntropyBackward | Op::Softmax | Op::SoftmaxBackward => {
                5 * in_n
            }
            Op::LayerNorm { .. } | Op::LayerNormBackward => 8 * in_n,
            Op::Gelu | Op::GeluBackward | Op::BiasGelu | Op::BiasGeluBackward => 11 * out_n,
            Op::Embedding | Op::EmbeddingBackward { .. } => out_n.max(in_n),
            _ => out_n,
        }
    }

    /// Which inputs can carry a gradient (token ids and targets never do).
    pub fn differentiable_input(&self, i: usize) -> bool {
        match self {
            Op::Embedding => i == 1,
            Op::CrossEntropy => i == 0,
            _ => true,
        }
    }
}

/// Checks that all operands are floats of one dtype; returns it.
pub(crate) fn same_float(op: &'static str, ins: &[Meta]) -> Result<DType> {
    let dt = ins
        .first()
        .map(|m| m.1)
        .ok_or_else(|| Error::shape(op, "needs at least one operand"))?;
    for &(_, d) in ins {
        if !d.is_float() {
            return Err(Error::dtype(op, "a float operand", d));
        }
        if d != dt {
            return Err(Error::DType {
                op,
                detail: format!("operands mix {dt} and {d}; insert a cast"),
            });
        }
    }
    Ok(dt)
}

/// The dtype saved statistics (LayerNorm mean/rstd, attention log-sum-exp) are kept
/// in: f64 in f64 graphs, otherwise f32 whatever the activations' dtype.
pub(crate) fn stat_dtype(dt: DType) -> DType {
    if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}
