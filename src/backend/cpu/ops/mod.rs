//! The cpu reference kernels (`<op>_forward` / `<op>_backward`, llm.c style),
//! one file per op family as in `graph::ops`, each with the `run` that maps its
//! ops' operands onto its kernels. Every other backend is tested against them.

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

use std::borrow::Cow;

use super::kernel::{In, Real};
use super::view::{bytemuck_cast_mut, bytes, bytes_mut, load};
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::graph::ops::Op;
use crate::tensor::DType;

/// Widens operands to `F`, runs the reference kernel, and stores the outputs in
/// their own dtypes.
pub(super) fn run_as<F: Real>(op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()> {
    let args: Vec<In<F>> = ins
        .iter()
        .map(|t| {
            if t.dtype == DType::I32 {
                In::I(bytemuck::cast_slice(bytes(t)))
            } else if outs.iter().any(|o| o.block == t.block) {
                // A donated input shares its block with an output: copy it, so
                // no slice is both read and written.
                In::F(Cow::Owned(load::<F>(t).into_owned()))
            } else {
                In::F(load::<F>(t))
            }
        })
        .collect();
    let mut temps: Vec<Option<Vec<F>>> = outs
        .iter()
        .map(|t| (t.dtype != F::DTYPE).then(|| F::take(t.shape.numel())))
        .collect();
    {
        let mut slices: Vec<&mut [F]> = outs
            .iter()
            .zip(temps.iter_mut())
            .map(|(t, tmp)| match tmp {
                Some(v) => v.as_mut_slice(),
                None => bytemuck_cast_mut::<F>(bytes_mut(t)),
            })
            .collect();
        dispatch(op, ins, &args, &mut slices)?;
    }
    for (t, tmp) in outs.iter().zip(temps) {
        if let Some(v) = tmp {
            F::narrow(&v, t.dtype, bytes_mut(t))?;
            F::give(v);
        }
    }
    for a in args {
        if let In::F(Cow::Owned(v)) = a {
            F::give(v);
        }
    }
    Ok(())
}

/// The op list, routed to the family files.
fn dispatch<F: Real>(op: &Op, ins: &[&TensorRef], a: &[In<F>], o: &mut [&mut [F]]) -> Result<()> {
    match op {
        Op::Embedding | Op::EmbeddingBackward { .. } => embedding::run(op, ins, a, o),
        Op::MatMul { .. } => matmul::run(op, ins, a, o),
        Op::Add
        | Op::Mul
        | Op::Scale { .. }
        | Op::Gelu
        | Op::GeluBackward
        | Op::BiasGelu
        | Op::BiasGeluBackward
        | Op::Silu
        | Op::SiluBackward => elementwise::run(op, a, o),
        Op::RmsNorm { .. } | Op::RmsNormBackward => rmsnorm::run(op, a, o),
        Op::Rope { .. } => rope::run(op, ins, a, o),
        Op::LayerNorm { .. } | Op::LayerNormBackward => layernorm::run(op, a, o),
        Op::Attention { .. } | Op::AttentionBackward { .. } => attention::run(op, ins, a, o),
        Op::Softmax | Op::SoftmaxBackward => softmax::run(op, ins, a, o),
        Op::CrossEntropy { .. }
        | Op::CrossEntropyBackward { .. }
        | Op::CrossEntropyFused { .. } => cross_entropy::run(op, ins, a, o),
        Op::Transpose { .. } | Op::Split { .. } | Op::Concat { .. } => shape::run(op, ins, a, o),
        Op::Sum { .. } | Op::Mean { .. } | Op::Expand { .. } => reduce::run(op, ins, a, o),
        Op::Fill { value, .. } => {
            o[0].fill(F::c(*value));
            Ok(())
        }
        // A reshape is a view and a cast is a conversion of storage (see
        // `CpuBackend::run`): neither has a kernel here.
        Op::Reshape { .. } | Op::Cast { .. } => {
            Err(Error::Internal(format!("{} reached a kernel", op.name())))
        }
    }
}

/// The error of a family's `run` handed an op of another family.
fn misrouted(op: &Op) -> Error {
    Error::Internal(format!(
        "{} was routed to the wrong kernel family",
        op.name()
    ))
}
