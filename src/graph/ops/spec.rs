//! The op table: every fact about an op that is not code — its name, operand
//! count, autocast rule, recompute cost, FLOPs, donation and which inputs take
//! gradients — written once per op in [`Op::spec`]. The scheduler, autocast and
//! autodiff read these facts through the thin methods on [`Op`].

use super::{attention, matmul, Op};
use crate::graph::amp::CastRule;
use crate::tensor::Shape;

/// The facts about one op, as [`Op::spec`] lists them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpSpec {
    /// The snake_case name that error messages and memory tags print.
    pub name: &'static str,
    /// Operand count; `None` for any number (concat).
    pub arity: Option<usize>,
    /// What autocast does with the float operands.
    pub amp: CastRule,
    /// The outputs recompute cheaply (elementwise, norms, views, reductions):
    /// the "cheap" recompute policy may drop them.
    pub cheap: bool,
    /// The output is a view of the input's memory; no kernel runs.
    pub alias: bool,
    /// The planner's FLOP count for one run.
    pub cost: Cost,
    /// `(input, output)` when the output may take over the input's memory if
    /// the input dies at this node (the executor decides). Only for ops whose
    /// kernels, on every backend, read each element of that input before writing
    /// the same element of the output and never read it again.
    pub donates: Option<(usize, usize)>,
    /// Which inputs can carry a gradient.
    pub grads: Grads,
}

/// How an op's FLOPs follow from its shapes (the planner's cost model).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cost {
    /// This many FLOPs per element of the first output.
    PerOutput(u64),
    /// This many FLOPs per element of the first input.
    PerInput(u64),
    /// One per element of the larger of the first input and first output (a
    /// gather or scatter of rows).
    Rows,
    /// `2·M·N·K` per GEMM of `op(a) @ op(b)`.
    Gemm {
        /// `a` is transposed.
        ta: bool,
        /// `b` is transposed.
        tb: bool,
    },
    /// Causal attention over `qkv`: half of the T×T scores, each a dot of length
    /// C/H for QKᵀ and for PV; the backward pass does about 2.5 times that.
    Attention {
        /// Number of heads.
        n_head: usize,
        /// The backward op.
        backward: bool,
    },
}

/// Which inputs of an op can carry a gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grads {
    /// Every input.
    All,
    /// Only this one (the others are token ids or targets).
    Only(usize),
}

/// An op of `arity` operands, its autocast rule and cost, with the defaults
/// most ops share: cheap to recompute, a kernel of its own, no donation,
/// gradients for every input.
const fn op(name: &'static str, arity: usize, amp: CastRule, cost: Cost) -> OpSpec {
    OpSpec {
        name,
        arity: Some(arity),
        amp,
        cheap: true,
        alias: false,
        cost,
        donates: None,
        grads: Grads::All,
    }
}

impl OpSpec {
    /// Takes any number of operands.
    const fn variadic(self) -> OpSpec {
        OpSpec {
            arity: None,
            ..self
        }
    }
    /// Costly to recompute: the "cheap" policy keeps its outputs (as Megatron's
    /// selective recompute keeps the matmul outputs).
    const fn costly(self) -> OpSpec {
        OpSpec {
            cheap: false,
            ..self
        }
    }
    /// A view of its input: no kernel runs.
    const fn alias(self) -> OpSpec {
        OpSpec {
            alias: true,
            ..self
        }
    }
    const fn donates(self, input: usize, output: usize) -> OpSpec {
        OpSpec {
            donates: Some((input, output)),
            ..self
        }
    }
    const fn grad_only(self, input: usize) -> OpSpec {
        OpSpec {
            grads: Grads::Only(input),
            ..self
        }
    }
}

impl Op {
    /// The op's facts: the op table, one row per op. Backward ops are recorded
    /// by autodiff, never under autocast, so their rule is `Keep`.
    #[rustfmt::skip]
    pub fn spec(&self) -> OpSpec {
        use CastRule::{F32LowOut, FollowFirst, Keep, Low, Residual, F32};
        use Cost::{Gemm, PerInput, PerOutput, Rows};
        let attention = |n_head, backward| Cost::Attention { n_head, backward };
        match *self {
            //                                 name                     arity  amp        cost
            Op::Embedding =>                op("embedding",              2, Keep,        Rows).costly().grad_only(1),
            Op::EmbeddingBackward { .. } => op("embedding_backward",     2, Keep,        Rows).costly(),
            Op::MatMul { ta, tb } =>        op("matmul",                 2, Low,         Gemm { ta, tb }).costly(),
            Op::Add =>                      op("add",                    2, Residual,    PerOutput(1)),
            Op::Mul =>                      op("mul",                    2, FollowFirst, PerOutput(1)),
            Op::Scale { .. } =>             op("scale",                  1, Keep,        PerOutput(1)),
            Op::Gelu =>                     op("gelu",                   1, Keep,        PerOutput(11)),
            Op::GeluBackward =>             op("gelu_backward",          2, Keep,        PerOutput(11)),
            Op::BiasGelu =>                 op("bias_gelu",              2, FollowFirst, PerOutput(11)),
            Op::BiasGeluBackward =>         op("bias_gelu_backward",     3, Keep,        PerOutput(11)),
            Op::LayerNorm { .. } =>         op("layernorm",              3, F32LowOut,   PerInput(8)),
            Op::LayerNormBackward =>        op("layernorm_backward",     5, Keep,        PerInput(8)),
            Op::RmsNorm { .. } =>           op("rmsnorm",                2, F32LowOut,   PerInput(5)),
            Op::RmsNormBackward =>          op("rmsnorm_backward",       4, Keep,        PerInput(6)),
            Op::Silu =>                     op("silu",                   1, Keep,        PerOutput(5)),
            Op::SiluBackward =>             op("silu_backward",          2, Keep,        PerOutput(8)),
            Op::Rope { .. } =>              op("rope",                   1, Keep,        PerOutput(4)),
            Op::Attention { n_head, .. } => op("attention",              1, Low,         attention(n_head, false)).costly(),
            Op::AttentionBackward { n_head, .. } =>
                                            op("attention_backward",     4, Keep,        attention(n_head, true)).costly(),
            Op::Softmax =>                  op("softmax",                1, F32,         PerInput(5)),
            Op::SoftmaxBackward =>          op("softmax_backward",       2, Keep,        PerInput(5)),
            // Keep: its kernels widen the logits to f32 and the loss is f32, so an
            // f32 copy of the logits would only cost memory (and give the same bits).
            Op::CrossEntropy { .. } =>      op("cross_entropy",          2, Keep,        PerInput(5)).costly().grad_only(0),
            // The logits are a language model's largest activation, and dlogits
            // the same size: one buffer serves both.
            Op::CrossEntropyBackward { .. } =>
                                            op("cross_entropy_backward", 3, Keep,        PerInput(5)).costly().donates(0, 0),
            // The forward's and the backward's FLOPs, so plans cost the same.
            Op::CrossEntropyFused { .. } => op("cross_entropy_fused",    3, Keep,        PerInput(10)).costly().donates(0, 1),
            Op::Reshape { .. } =>           op("reshape",                1, Keep,        PerOutput(1)).alias(),
            Op::Transpose { .. } =>         op("transpose",              1, Keep,        PerOutput(1)),
            Op::Split { .. } =>             op("split",                  1, Keep,        PerOutput(1)),
            Op::Concat { .. } =>            op("concat",                 1, FollowFirst, PerOutput(1)).variadic(),
            Op::Sum { .. } =>               op("sum",                    1, F32,         PerOutput(1)),
            Op::Mean { .. } =>              op("mean",                   1, F32,         PerOutput(1)),
            Op::Expand { .. } =>            op("expand",                 1, Keep,        PerOutput(1)),
            Op::Cast { .. } =>              op("cast",                   1, Keep,        PerOutput(1)),
            Op::Fill { .. } =>              op("fill",                   0, Keep,        PerOutput(1)),
        }
    }
}

impl Cost {
    /// FLOPs of one run on operands of shapes `ins` with outputs of shapes `outs`.
    pub fn flops(self, ins: &[&Shape], outs: &[&Shape]) -> u64 {
        let out_n = outs.first().map_or(0, |s| s.numel()) as u64;
        let in_n = ins.first().map_or(0, |s| s.numel()) as u64;
        match self {
            Cost::PerOutput(k) => k * out_n,
            Cost::PerInput(k) => k * in_n,
            Cost::Rows => out_n.max(in_n),
            Cost::Gemm { ta, tb } => match matmul::dims(ins[0], ins[1], ta, tb) {
                Ok((d, _)) => 2 * (d.batch * d.m * d.n * d.k) as u64,
                Err(_) => 0,
            },
            Cost::Attention { n_head, backward } => {
                // FLOPs follow the queries: C is the query width H·D.
                let (b, t, c) = attention::query_btc(ins[0], n_head).unwrap_or((0, 0, 0));
                let fwd = 2 * (b * t * t * c) as u64;
                if backward {
                    fwd * 5 / 2
                } else {
                    fwd
                }
            }
        }
    }
}
