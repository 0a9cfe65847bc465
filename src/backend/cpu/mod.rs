//! The cpu backend: the reference every other backend is checked against.
//! Kernels compute in f32 (f64 for gradient checks); f16/bf16 tensors are storage
//! only, widened before each kernel and rounded to nearest-even after it.

mod memory;

use std::borrow::Cow;

use rayon::prelude::*;

pub use memory::{host_available_bytes, CpuMemory};

use super::{AdamWSlot, AdamWStep, Backend, TensorRef};
use crate::error::{Error, Result};
use crate::graph::ops::{self, In, Op, Real};
use crate::tensor::{load_f64, store_f64, DType};

/// The cpu reference backend; its tensors live in a [`CpuMemory`] and it reads
/// them through the host addresses their blocks carry.
pub struct CpuBackend;

impl CpuBackend {
    /// The backend and the host memory its tensors must be allocated from.
    pub fn new() -> (CpuBackend, CpuMemory) {
        (CpuBackend, CpuMemory::default())
    }
}

fn bytes(t: &TensorRef) -> &[u8] {
    // SAFETY: the block was allocated by CpuMemory (handle is a host address) and
    // is live while the executor holds its TensorRef; the shape rule sized it.
    unsafe {
        std::slice::from_raw_parts(
            (t.block.handle + t.block.offset) as *const u8,
            t.byte_size() as usize,
        )
    }
}

#[allow(clippy::mut_from_ref)]
fn bytes_mut(t: &TensorRef) -> &mut [u8] {
    // SAFETY: as in `bytes`; outputs never alias inputs or each other (the
    // allocator hands out disjoint blocks), so no other reference exists.
    unsafe {
        std::slice::from_raw_parts_mut(
            (t.block.handle + t.block.offset) as *mut u8,
            t.byte_size() as usize,
        )
    }
}

/// Reads a float tensor as `F`, borrowing when the dtype already matches.
fn load<F: Real>(t: &TensorRef) -> Cow<'_, [F]> {
    if t.dtype == F::DTYPE {
        Cow::Borrowed(bytemuck_cast::<F>(bytes(t)))
    } else {
        Cow::Owned(load_f64(t.dtype, bytes(t)).into_iter().map(F::c).collect())
    }
}

fn bytemuck_cast<F: Real>(b: &[u8]) -> &[F] {
    // SAFETY: F is f32 or f64 (plain old data); blocks are 64-byte aligned and
    // sized to a whole number of elements.
    unsafe {
        std::slice::from_raw_parts(b.as_ptr() as *const F, b.len() / std::mem::size_of::<F>())
    }
}

#[allow(clippy::mut_from_ref)]
fn bytemuck_cast_mut<F: Real>(b: &mut [u8]) -> &mut [F] {
    // SAFETY: as in bytemuck_cast.
    unsafe {
        std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut F, b.len() / std::mem::size_of::<F>())
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, _dtype: DType) -> bool {
        true
    }

    fn run(&mut self, op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()> {
        if let Op::Cast { .. } = op {
            let v = load_f64(ins[0].dtype, bytes(ins[0]));
            return store_f64(outs[0].dtype, &v, bytes_mut(outs[0]));
        }
        let f64_mode = ins.iter().chain(outs).any(|t| t.dtype == DType::F64);
        if f64_mode {
            run_as::<f64>(op, ins, outs)
        } else {
            run_as::<f32>(op, ins, outs)
        }
    }

    fn write(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()> {
        let out = bytes_mut(dst);
        if out.len() != data.len() {
            return Err(Error::Internal(format!(
                "write of {} bytes into a {}-byte tensor",
                data.len(),
                out.len()
            )));
        }
        out.copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        Ok(bytes(src).to_vec())
    }

    fn accumulate(&mut self, dst: &TensorRef, src: &TensorRef) -> Result<()> {
        if dst.shape != src.shape {
            return Err(Error::shape(
                "accumulate",
                format!("{} into {}", src.shape, dst.shape),
            ));
        }
        if dst.dtype == DType::F32 && src.dtype == DType::F32 {
            let d = bytemuck_cast_mut::<f32>(bytes_mut(dst));
            let s = bytemuck_cast::<f32>(bytes(src));
            d.iter_mut().zip(s).for_each(|(d, &s)| *d += s);
            return Ok(());
        }
        let mut d = load_f64(dst.dtype, bytes(dst));
        let s = load_f64(src.dtype, bytes(src));
        d.iter_mut().zip(&s).for_each(|(d, &s)| *d += s);
        store_f64(dst.dtype, &d, bytes_mut(dst))
    }

    fn sum_squares(&mut self, ts: &[&TensorRef]) -> Result<f64> {
        // Per-tensor sums in tensor order: deterministic for a given parameter list.
        Ok(ts
            .iter()
            .map(|t| {
                load::<f32>(t)
                    .iter()
                    .map(|&x| (x as f64) * (x as f64))
                    .sum::<f64>()
            })
            .sum())
    }

    fn adamw(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        let (bc1, bc2) = s.bias_corrections();
        for slot in slots {
            slot.check_f32()?;
            let p = bytemuck_cast_mut::<f32>(bytes_mut(slot.param));
            let g = bytemuck_cast::<f32>(bytes(slot.grad));
            let m = bytemuck_cast_mut::<f32>(bytes_mut(slot.m));
            let v = bytemuck_cast_mut::<f32>(bytes_mut(slot.v));
            let (lr, b1, b2, eps, gs) = (
                s.lr as f32,
                s.beta1 as f32,
                s.beta2 as f32,
                s.eps as f32,
                s.grad_scale as f32,
            );
            let (bc1, bc2, decay) = (bc1 as f32, bc2 as f32, s.decay_factor(slot.decay) as f32);
            p.par_iter_mut()
                .zip(g.par_iter())
                .zip(m.par_iter_mut().zip(v.par_iter_mut()))
                .for_each(|((p, &g), (m, v))| {
                    let g = g * gs;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    let mhat = *m / bc1;
                    let vhat = *v / bc2;
                    *p = *p * decay - lr * mhat / (vhat.sqrt() + eps);
                });
        }
        Ok(())
    }
}

/// Widens operands to `F`, runs the reference kernel, and stores the outputs in
/// their own dtypes.
fn run_as<F: Real>(op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()> {
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
        .map(|t| (t.dtype != F::DTYPE).then(|| vec![F::zero(); t.shape.numel()]))
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
            let wide: Vec<f64> = v.iter().map(|x| x.to_f64().unwrap_or(f64::NAN)).collect();
            store_f64(t.dtype, &wide, bytes_mut(t))?;
        }
    }
    Ok(())
}

/// The op list, routed to the reference kernels.
fn dispatch<F: Real>(op: &Op, ins: &[&TensorRef], a: &[In<F>], o: &mut [&mut [F]]) -> Result<()> {
    let n = op.name();
    let shape = |i: usize| &ins[i].shape;
    match op {
        Op::Embedding => {
            ops::embedding::embedding_forward(a[0].ids(n)?, a[1].f(n)?, o[0], shape(1).last())?
        }
        Op::EmbeddingBackward { .. } => {
            ops::embedding::embedding_backward(a[0].ids(n)?, a[1].f(n)?, o[0], shape(1).last())?
        }
        Op::MatMul { ta, tb } => {
            let (d, _) = ops::matmul::dims(shape(0), shape(1), *ta, *tb)?;
            ops::matmul::matmul_forward(a[0].f(n)?, a[1].f(n)?, o[0], d, *ta, *tb)
        }
        Op::Add => ops::elementwise::add_forward(a[0].f(n)?, a[1].f(n)?, o[0]),
        Op::Mul => ops::elementwise::mul_forward(a[0].f(n)?, a[1].f(n)?, o[0]),
        Op::Scale { factor } => ops::elementwise::scale_forward(a[0].f(n)?, o[0], *factor),
        Op::Gelu => ops::elementwise::gelu_forward(a[0].f(n)?, o[0]),
        Op::GeluBackward => ops::elementwise::gelu_backward(a[0].f(n)?, a[1].f(n)?, o[0]),
        Op::BiasGelu => ops::elementwise::bias_gelu_forward(a[0].f(n)?, a[1].f(n)?, o[0]),
        Op::BiasGeluBackward => {
            ops::elementwise::bias_gelu_backward(a[0].f(n)?, a[1].f(n)?, a[2].f(n)?, o[0])
        }
        Op::LayerNorm { eps } => {
            let [y, mean, rstd] = o else {
                return Err(Error::Internal("layernorm outputs".into()));
            };
            ops::layernorm::layernorm_forward(
                a[0].f(n)?,
                a[1].f(n)?,
                a[2].f(n)?,
                y,
                mean,
                rstd,
                *eps,
            )
        }
        Op::LayerNormBackward => {
            let [dx, dw, db] = o else {
                return Err(Error::Internal("layernorm_backward outputs".into()));
            };
            ops::layernorm::layernorm_backward(
                a[0].f(n)?,
                a[1].f(n)?,
                a[2].f(n)?,
                a[3].f(n)?,
                a[4].f(n)?,
                dx,
                dw,
                db,
            )
        }
        Op::Attention { n_head } => {
            let (b, t, c) = ops::attention::btc(shape(0), *n_head)?;
            let [out, lse] = o else {
                return Err(Error::Internal("attention outputs".into()));
            };
            ops::attention::attention_forward(a[0].f(n)?, out, lse, b, t, c, *n_head)
        }
        Op::AttentionBackward { n_head } => {
            let (b, t, c) = ops::attention::btc(shape(0), *n_head)?;
            ops::attention::attention_backward(
                a[0].f(n)?,
                a[1].f(n)?,
                a[2].f(n)?,
                a[3].f(n)?,
                o[0],
                b,
                t,
                c,
                *n_head,
            )
        }
        Op::Softmax => ops::softmax::softmax_forward(a[0].f(n)?, o[0], shape(0).last()),
        Op::SoftmaxBackward => {
            ops::softmax::softmax_backward(a[0].f(n)?, a[1].f(n)?, o[0], shape(0).last())
        }
        Op::CrossEntropy => ops::cross_entropy::cross_entropy_forward(
            a[0].f(n)?,
            a[1].ids(n)?,
            o[0],
            shape(0).last(),
        )?,
        Op::CrossEntropyBackward => ops::cross_entropy::cross_entropy_backward(
            a[0].f(n)?,
            a[1].ids(n)?,
            a[2].f(n)?,
            o[0],
            shape(0).last(),
        )?,
        Op::Transpose { a: x, b: y } => {
            ops::shape::transpose_forward(a[0].f(n)?, o[0], shape(0), *x, *y)
        }
        Op::Split { axis, .. } => ops::shape::split_forward(a[0].f(n)?, o, shape(0), *axis),
        Op::Concat { axis } => {
            let xs = a.iter().map(|x| x.f(n)).collect::<Result<Vec<_>>>()?;
            let mut dims = shape(0).dims().to_vec();
            dims[*axis] = ins.iter().map(|t| t.shape.dims()[*axis]).sum();
            ops::shape::concat_forward(&xs, o[0], &dims.into(), *axis)
        }
        Op::Sum { axes } => ops::reduce::sum_forward(a[0].f(n)?, o[0], shape(0), axes, false),
        Op::Mean { axes } => ops::reduce::sum_forward(a[0].f(n)?, o[0], shape(0), axes, true),
        Op::Expand { axes, shape: s } => ops::reduce::expand_forward(a[0].f(n)?, o[0], s, axes),
        Op::Fill { value, .. } => o[0].fill(F::c(*value)),
        Op::Reshape { .. } | Op::Cast { .. } => {
            return Err(Error::Internal(format!("{n} reached a kernel")))
        }
    }
    Ok(())
}
