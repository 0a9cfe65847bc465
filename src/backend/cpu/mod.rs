//! The cpu backend: the reference every other backend is checked against.
//! Kernels compute in f32 (f64 for gradient checks); f16/bf16 tensors are storage
//! only, widened before each kernel and rounded to nearest-even after it. The
//! kernels live in [`ops`], one file per op family; [`kernel`] holds what they
//! share.

mod convert;
pub mod kernel;
pub mod math;
mod memory;
pub mod ops;
mod scratch;
pub mod simd;
mod view;

use rayon::prelude::*;

pub use memory::{host_available_bytes, CpuMemory};

use super::{AdamWQ8Slot, AdamWSlot, AdamWStep, Backend, TensorRef};
use crate::error::{Error, Result};
use crate::graph::ops::Op;
use crate::tensor::{load_f64, store_f64, DType};
use view::{bytemuck_cast, bytemuck_cast_mut, bytes, bytes_mut, load};

/// The cpu reference backend; its tensors live in a [`CpuMemory`] and it reads
/// them through the host addresses their blocks carry.
pub struct CpuBackend {
    /// Profile timestamps since the last take: ops finish before `run`
    /// returns, so the host clock times them.
    stamps: Vec<std::time::Instant>,
}

impl CpuBackend {
    /// The backend and the host memory its tensors must be allocated from.
    pub fn new() -> (CpuBackend, CpuMemory) {
        (CpuBackend { stamps: Vec::new() }, CpuMemory::default())
    }
}

/// AdamW's hyper-parameters in the f32 the kernels compute in.
struct Hyper {
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    gs: f32,
    bc1: f32,
    bc2: f32,
}

impl Hyper {
    fn of(s: &AdamWStep) -> Hyper {
        let (bc1, bc2) = s.bias_corrections();
        Hyper {
            lr: s.lr as f32,
            b1: s.beta1 as f32,
            b2: s.beta2 as f32,
            eps: s.eps as f32,
            gs: s.grad_scale as f32,
            bc1: bc1 as f32,
            bc2: bc2 as f32,
        }
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
            let (x, y) = (ins[0], outs[0]);
            return ops::cast::cast_forward(x.dtype, bytes(x), y.dtype, bytes_mut(y));
        }
        let f64_mode = ins.iter().chain(outs).any(|t| t.dtype == DType::F64);
        if f64_mode {
            ops::run_as::<f64>(op, ins, outs)
        } else {
            ops::run_as::<f32>(op, ins, outs)
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

    fn timestamp(&mut self) -> Result<Option<usize>> {
        self.stamps.push(std::time::Instant::now());
        Ok(Some(self.stamps.len() - 1))
    }

    fn take_timestamps(&mut self) -> Result<Vec<f64>> {
        let stamps = std::mem::take(&mut self.stamps);
        let Some(&origin) = stamps.first() else {
            return Ok(Vec::new());
        };
        Ok(stamps
            .iter()
            .map(|t| t.duration_since(origin).as_secs_f64() * 1e3)
            .collect())
    }

    fn adamw(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        for slot in slots {
            slot.check_f32()?;
            let p = bytemuck_cast_mut::<f32>(bytes_mut(slot.param));
            let g = bytemuck_cast::<f32>(bytes(slot.grad));
            let m = bytemuck_cast_mut::<f32>(bytes_mut(slot.m));
            let v = bytemuck_cast_mut::<f32>(bytes_mut(slot.v));
            let Hyper {
                lr,
                b1,
                b2,
                eps,
                gs,
                bc1,
                bc2,
            } = Hyper::of(s);
            let decay = s.decay_factor(slot.decay) as f32;
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
            if let Some(shadow) = slot.shadow {
                self.run(&Op::Cast { to: shadow.dtype }, &[slot.param], &[shadow])?;
            }
        }
        Ok(())
    }

    fn adamw_q8(
        &mut self,
        slots: &[AdamWQ8Slot],
        s: &AdamWStep,
        codebook: &TensorRef,
    ) -> Result<()> {
        use crate::optim::quant::{self, Q8_BLOCK};
        let book: &[f32] = &load::<f32>(codebook);
        let Hyper {
            lr,
            b1,
            b2,
            eps,
            gs,
            bc1,
            bc2,
        } = Hyper::of(s);
        for slot in slots {
            slot.check()?;
            let decay = s.decay_factor(slot.decay) as f32;
            let p = bytemuck_cast_mut::<f32>(bytes_mut(slot.param));
            let g = bytemuck_cast::<f32>(bytes(slot.grad));
            let mq = bytes_mut(slot.m);
            let vq = bytes_mut(slot.v);
            let scales = bytemuck_cast_mut::<f32>(bytes_mut(slot.scales));
            let nb = scales.len() / 2;
            let (sm, sv) = scales.split_at_mut(nb);
            // One block at a time: its new scales need all its new moments.
            p.par_chunks_mut(Q8_BLOCK)
                .zip(g.par_chunks(Q8_BLOCK))
                .zip(mq.par_chunks_mut(Q8_BLOCK).zip(vq.par_chunks_mut(Q8_BLOCK)))
                .zip(sm.par_iter_mut().zip(sv.par_iter_mut()))
                .for_each(|(((p, g), (mq, vq)), (sm, sv))| {
                    let mut m = [0f32; Q8_BLOCK];
                    let mut v = [0f32; Q8_BLOCK];
                    let n = p.len();
                    for i in 0..n {
                        let gr = g[i] * gs;
                        let mo = quant::decode_m(book, mq[i], *sm);
                        let vo = quant::decode_v(book, vq[i], *sv);
                        m[i] = b1 * mo + (1.0 - b1) * gr;
                        v[i] = b2 * vo + (1.0 - b2) * gr * gr;
                        p[i] = p[i] * decay - lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                    }
                    (*sm, *sv) = quant::encode_block(book, &m[..n], &v[..n], mq, vq);
                });
            if let Some(shadow) = slot.shadow {
                self.run(&Op::Cast { to: shadow.dtype }, &[slot.param], &[shadow])?;
            }
        }
        Ok(())
    }
}
