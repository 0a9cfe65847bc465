//! The op list. [`Op`] names every op a graph can record; [`Op::spec`] (in
//! `spec.rs`) is the op table, one line per op with the facts the rest of the
//! crate asks about (name, arity, autocast rule, cheap to recompute, FLOPs,
//! donation, which inputs take gradients). Each family file holds, for its ops,
//! the shape rule (`infer`) and the vector-Jacobian rule (`vjp`) that autodiff
//! calls, plus the shape → kernel parameter helpers every backend uses
//! ([`matmul::dims`], [`attention::btc`], [`reduce::reduce_plan`],
//! [`shape::slices`], ...); `route.rs` routes each op to them. The cpu reference
//! kernels, which every other backend is tested against, live in
//! [`backend::cpu::ops`](crate::backend::cpu::ops) under the same family names.
//!
//! To add an op: add a variant here; give it one line in `Op::spec`; write its
//! `infer` and `vjp` in a family file (or a new one) and route them in
//! `route.rs`; write its cpu kernel (`<op>_forward` / `<op>_backward`) in the
//! same family under `backend::cpu::ops` and map its operands in that family's
//! `run` (and in `backend::cpu::ops::dispatch` for a new family); implement it
//! in the wgpu and cuda backends; and add its gradient check to
//! `tests/gradcheck.rs` and its backend check to `tests/backends.rs`.

pub mod attention;
pub mod cast;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod matmul;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod shape;
pub mod softmax;

mod route;
mod spec;

pub use spec::{Cost, Grads, OpSpec};

use crate::error::{Error, Result};
use crate::graph::amp::CastRule;
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
        /// `y`'s dtype where it is not `x`'s: autocast sets its low dtype, so
        /// the norm computes from f32 operands and the matmul after it reads
        /// its output with no cast between (only f32 `x` with f16/bf16 `y`,
        /// [`mixed`]'s one mix).
        out: Option<DType>,
    },
    /// `dy [.., C]`, `x [.., C]`, `w [C]`, `mean [..]`, `rstd [..]` →
    /// `dx [.., C]`, `dw [C]`, `db [C]` in `x`'s and `w`'s dtype; `dy` may be
    /// f16/bf16 next to f32 `x` (the gradient of a low-precision `y`).
    LayerNormBackward,
    /// `x [.., C]`, `w [C]` → `y [.., C]`, `rstd [..]`: RMSNorm, `y = x ·
    /// rstd · w` with `rstd = 1/√(mean(x²) + eps)` (Llama's norm: no mean
    /// subtracted, no bias); `rstd` is f32 (f64 in f64 graphs).
    RmsNorm {
        /// Added to the mean square before its reciprocal square root is taken.
        eps: f64,
        /// `y`'s dtype where it is not `x`'s, as for [`Op::LayerNorm`].
        out: Option<DType>,
    },
    /// `dy [.., C]`, `x [.., C]`, `w [C]`, `rstd [..]` → `dx [.., C]`, `dw [C]`
    /// in `x`'s and `w`'s dtype; `dy` may be f16/bf16 next to f32 `x`.
    RmsNormBackward,
    /// SiLU elementwise, `x · σ(x)`, same shape: SwiGLU's gate.
    Silu,
    /// `x`, `dy` (one shape) → `dx = silu'(x) · dy`.
    SiluBackward,
    /// Rotary position embedding of the q and k heads of `qkv [B, T, (H +
    /// 2K)·D]` (the layout [`Op::Attention`] reads), v copied: in each head,
    /// column `i < D/2` pairs with `i + D/2` (the rotate-half convention of
    /// Hugging Face's Llama) and position `t` turns the pair by `t ·
    /// theta^(−2i/D)`.
    Rope {
        /// Query heads `H`.
        n_head: usize,
        /// Key/value heads `K`.
        n_kv_head: usize,
        /// The base of the frequencies (10000 in Llama 2).
        theta: f64,
        /// Turn by the opposite angle: the transpose, which is the gradient.
        inverse: bool,
    },
    /// Causal self-attention: `qkv [B, T, (H + 2K)·D]` (queries, then keys,
    /// then values; `K = H` is multi-head attention's `[B, T, 3C]`) →
    /// `out [B, T, H·D]`, `lse [B, H, T]` (each query row's log-sum-exp, saved
    /// for the backward; f32, or f64 in f64 graphs). Query head `h` reads
    /// key/value head `h / (H / K)`: grouped-query attention without copies.
    Attention {
        /// Query heads `H`.
        n_head: usize,
        /// Key/value heads `K`, dividing `H`.
        n_kv_head: usize,
    },
    /// `qkv`, `out`, `lse`, `dout [B, T, H·D]` → `dqkv` (qkv's shape),
    /// recomputing the probabilities from `qkv` and `lse`.
    AttentionBackward {
        /// Query heads `H`, as in the forward op.
        n_head: usize,
        /// Key/value heads `K`, as in the forward op.
        n_kv_head: usize,
    },
    /// Softmax over the last dim, same shape.
    Softmax,
    /// `y` (the softmax output), `dy` → `dx = y ⊙ (dy − Σ y dy)` per row.
    SoftmaxBackward,
    /// `logits [.., V]`, `targets [..] i32` → the mean loss `[]`; the softmax is
    /// fused in and never stored. Only the first `classes` logits of a row are
    /// classes: the rest (a vocabulary padded for tensor-core GEMMs) are absent
    /// from the softmax.
    CrossEntropy {
        /// Real classes, `1..=V`; targets must lie below it.
        classes: usize,
    },
    /// `logits [.., V]`, `targets [..] i32`, `dloss []` → `dlogits [.., V]`,
    /// exactly 0 past `classes`.
    CrossEntropyBackward {
        /// Real classes, as in the forward op.
        classes: usize,
    },
    /// A training step's loss and its gradient in one pass: `logits [.., V]`,
    /// `targets [..] i32`, `dloss []` → `loss []`, `dlogits [.., V]` (exactly 0
    /// past `classes`). Recorded in the backward phase (its seed is the
    /// backward's), so it is never recomputed; dlogits takes the logits'
    /// memory when they die here, which they do in a training graph.
    CrossEntropyFused {
        /// Real classes, as in [`Op::CrossEntropy`].
        classes: usize,
    },
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
        self.spec().name
    }

    /// True when the output is a view of the input's memory (no kernel runs).
    pub fn is_alias(&self) -> bool {
        self.spec().alias
    }

    /// `(input, output)` when the output may take over the input's memory if
    /// the input dies at this node (the executor decides); see the `donates`
    /// field of [`OpSpec`] for which ops may.
    pub fn donates(&self) -> Option<(usize, usize)> {
        self.spec().donates
    }

    /// Ops whose outputs recompute cheaply (elementwise, norms, views, reductions):
    /// the "cheap" recompute policy drops only their outputs, as Megatron's
    /// selective recompute keeps the matmul outputs.
    pub fn is_cheap(&self) -> bool {
        self.spec().cheap
    }

    /// Floating-point operations of one run of the op on operands of shapes `ins`
    /// with outputs of shapes `outs`: the planner's cost model.
    pub fn flops(&self, ins: &[&Shape], outs: &[&Shape]) -> u64 {
        self.spec().cost.flops(ins, outs)
    }

    /// Which inputs can carry a gradient (token ids and targets never do).
    pub fn differentiable_input(&self, i: usize) -> bool {
        match self.spec().grads {
            Grads::All => true,
            Grads::Only(j) => i == j,
        }
    }

    /// What autocast does with the op's float operands.
    pub fn cast_rule(&self) -> CastRule {
        self.spec().amp
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

/// The dtype an op's kernels are named and picked by: its first f16/bf16
/// tensor's, else its first float tensor's; f32 when none is a float. Saved
/// statistics stay f32 and so never decide it, and an op mixing f32 with a
/// low dtype ([`mixed`]) is named by the low one, whichever operand comes
/// first. Every GPU host picks its kernel variant by this one rule.
pub fn storage_dtype(dtypes: impl IntoIterator<Item = DType>) -> DType {
    let mut first = None;
    for d in dtypes {
        if matches!(d, DType::F16 | DType::BF16) {
            return d;
        }
        if d.is_float() && first.is_none() {
            first = Some(d);
        }
    }
    first.unwrap_or(DType::F32)
}

/// Whether an op may take `wide` where its other operands are `low`: the one
/// mix of float dtypes ops allow is f32 with f16 or bf16 (a LayerNorm writing
/// its output for the next matmul, a residual add of a low-precision
/// projection to the f32 stream, and their backward ops). The shape rules ask
/// it; the backends then tell a mixed op by its operands' dtypes differing.
pub fn mixed(wide: DType, low: DType) -> bool {
    wide == DType::F32 && matches!(low, DType::F16 | DType::BF16)
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
