//! The shape and vector-Jacobian rules of every op, routed to their family
//! files: they are code, not facts, so they stay out of the op table.

use super::{attention, cast, cross_entropy, elementwise, embedding, layernorm, matmul};
use super::{reduce, rmsnorm, rope, shape, softmax, Meta, Op};
use crate::error::{Error, Result};
use crate::graph::{Graph, Value};
use crate::tensor::{DType, Shape};

impl Op {
    /// The family the op belongs to: its file in `graph::ops` and in each
    /// backend's `ops/`, as profiles and traffic tables group ops.
    pub fn family(&self) -> &'static str {
        match self {
            Op::Embedding | Op::EmbeddingBackward { .. } => "embedding",
            Op::MatMul { .. } => "matmul",
            Op::Add
            | Op::Mul
            | Op::Scale { .. }
            | Op::Fill { .. }
            | Op::Gelu
            | Op::GeluBackward
            | Op::BiasGelu
            | Op::BiasGeluBackward
            | Op::Silu
            | Op::SiluBackward => "elementwise",
            Op::RmsNorm { .. } | Op::RmsNormBackward => "rmsnorm",
            Op::Rope { .. } => "rope",
            Op::LayerNorm { .. } | Op::LayerNormBackward => "layernorm",
            Op::Attention { .. } | Op::AttentionBackward { .. } => "attention",
            Op::Softmax | Op::SoftmaxBackward => "softmax",
            Op::CrossEntropy { .. }
            | Op::CrossEntropyBackward { .. }
            | Op::CrossEntropyFused { .. } => "cross_entropy",
            Op::Reshape { .. } | Op::Transpose { .. } | Op::Split { .. } | Op::Concat { .. } => {
                "shape"
            }
            Op::Sum { .. } | Op::Mean { .. } | Op::Expand { .. } => "reduce",
            Op::Cast { .. } => "cast",
        }
    }

    /// The shape rule: output shapes and dtypes from the operands'.
    pub fn infer(&self, ins: &[Meta]) -> Result<Vec<(Shape, DType)>> {
        let spec = self.spec();
        let name = spec.name;
        if let Some(n) = spec.arity {
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
            Op::Add => elementwise::infer_add(ins),
            Op::Mul | Op::BiasGelu => elementwise::infer_broadcast(name, ins),
            Op::BiasGeluBackward => elementwise::infer_bias_gelu_backward(ins),
            Op::Scale { .. } | Op::Gelu | Op::Silu | Op::Softmax => {
                elementwise::infer_unary(name, ins)
            }
            Op::GeluBackward | Op::SiluBackward | Op::SoftmaxBackward => {
                elementwise::infer_same(name, ins)
            }
            Op::RmsNorm { out, .. } => rmsnorm::infer(ins, *out),
            Op::RmsNormBackward => rmsnorm::infer_backward(ins),
            Op::Rope {
                n_head, n_kv_head, ..
            } => rope::infer(ins, *n_head, *n_kv_head),
            Op::LayerNorm { out, .. } => layernorm::infer(ins, *out),
            Op::LayerNormBackward => layernorm::infer_backward(ins),
            Op::Attention { n_head, n_kv_head } => attention::infer(ins, *n_head, *n_kv_head),
            Op::AttentionBackward { n_head, n_kv_head } => {
                attention::infer_backward(ins, *n_head, *n_kv_head)
            }
            Op::CrossEntropy { classes } => cross_entropy::infer(ins, *classes),
            Op::CrossEntropyBackward { classes } => cross_entropy::infer_backward(ins, *classes),
            Op::CrossEntropyFused { classes } => cross_entropy::infer_fused(ins, *classes),
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
            Op::Attention { n_head, n_kv_head } => {
                attention::vjp(g, ins, outs, dy()?, *n_head, *n_kv_head)
            }
            Op::RmsNorm { .. } => rmsnorm::vjp(g, ins, outs, dy()?),
            Op::Silu => Ok(vec![Some(g.apply(Op::SiluBackward, &[ins[0], dy()?])?[0])]),
            Op::Rope {
                n_head,
                n_kv_head,
                theta,
                inverse,
            } => {
                let back = Op::Rope {
                    n_head: *n_head,
                    n_kv_head: *n_kv_head,
                    theta: *theta,
                    inverse: !inverse,
                };
                Ok(vec![Some(g.apply(back, &[dy()?])?[0])])
            }
            Op::Softmax => softmax::vjp(g, outs, dy()?),
            Op::CrossEntropy { classes } => cross_entropy::vjp(g, ins, dy()?, *classes),
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
            | Op::SiluBackward
            | Op::RmsNormBackward
            | Op::LayerNormBackward
            | Op::AttentionBackward { .. }
            | Op::SoftmaxBackward
            | Op::CrossEntropyBackward { .. }
            | Op::CrossEntropyFused { .. } => Err(Error::Unsupported {
                backend: "autodiff",
                what: format!("the gradient of {} (second derivatives)", self.name()),
                hint: "differentiate the forward graph once",
            }),
        }
    }
}
