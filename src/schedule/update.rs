//! The AdamW update over the model state, wherever its moments are: one
//! launch for every parameter with f32 moments on the device, one for 8-bit
//! ones, and the moments in the host pool streamed through a small device
//! window, chunk by chunk. Every path runs the backend's own AdamW kernel on
//! the same f32 values, so where the moments live never changes a bit of
//! the result. The trainer and the planner's simulation both call this, so
//! the window's memory is in the prediction.

use super::state::{ModelState, ParamState, Store};
use crate::backend::profile::Span;
use crate::backend::{AdamWQ8Slot, AdamWSlot, AdamWStep, Device, DeviceTensor, TensorRef};
use crate::error::{Error, Result};
use crate::memory::{MemPhase, Tag, TensorKind};
use crate::optim::quant;
use crate::tensor::{DType, Shape};

/// Elements per chunk of the device window. A multiple of
/// [`quant::Q8_BLOCK`] (8-bit chunks hold whole blocks) and of 128, so every
/// chunk of a tensor starts 256-byte aligned in every dtype, as wgpu's
/// storage bindings need. 1 Mi elements: 8 MiB of f32 window for both
/// moments, a rounding error beside any state worth offloading.
pub const WINDOW_ELEMS: usize = 1 << 20;

static WINDOW: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(WINDOW_ELEMS);

/// Elements per window chunk now: [`WINDOW_ELEMS`] unless a test set fewer.
pub fn window_elems() -> usize {
    WINDOW.load(std::sync::atomic::Ordering::Relaxed)
}

/// Test hook: chunks of `n` elements (rounded up to a multiple of
/// [`quant::Q8_BLOCK`]), so small models stream in several chunks. Applies
/// to the whole process, simulations included.
#[doc(hidden)]
pub fn set_window_elems(n: usize) {
    let n = n.div_ceil(quant::Q8_BLOCK).max(1) * quant::Q8_BLOCK;
    WINDOW.store(n, std::sync::atomic::Ordering::Relaxed)
}

/// Applies one AdamW step to the parameters `which` (indices into
/// `state.params`), `grads[k]` being the gradient of `which[k]`.
pub fn apply(
    device: &mut Device,
    state: &ModelState,
    which: &[usize],
    grads: &[&TensorRef],
    args: &AdamWStep,
) -> Result<()> {
    let (mut f32_slots, mut q8_slots, mut streamed) = (Vec::new(), Vec::new(), Vec::new());
    for (&i, &g) in which.iter().zip(grads) {
        let p = &state.params[i];
        let mo = &p.moments;
        match (mo.m.device(), mo.v.device(), &mo.scales) {
            (Some(m), Some(v), None) => f32_slots.push(AdamWSlot {
                param: p.value.view(),
                grad: g,
                m,
                v,
                decay: p.spec.decays(),
                shadow: p.shadow.as_ref().map(|s| s.view()),
            }),
            (Some(m), Some(v), Some(s)) => q8_slots.push(AdamWQ8Slot {
                param: p.value.view(),
                grad: g,
                m,
                v,
                scales: s.device().expect("moments share a pool"),
                decay: p.spec.decays(),
                shadow: p.shadow.as_ref().map(|s| s.view()),
            }),
            _ => streamed.push((p, g)),
        }
    }
    if !f32_slots.is_empty() {
        let span = Span::new(MemPhase::Optimizer, "optimizer", "adamw");
        device.timed(span, |b| b.adamw(&f32_slots, args))?;
    }
    if !q8_slots.is_empty() {
        let book = codebook(state)?;
        let span = Span::new(MemPhase::Optimizer, "optimizer", "adamw_q8");
        device.timed(span, |b| b.adamw_q8(&q8_slots, args, book))?;
    }
    if !streamed.is_empty() {
        stream(device, state, &streamed, args)?;
    }
    Ok(())
}

fn codebook(state: &ModelState) -> Result<&TensorRef> {
    state
        .codebook
        .as_ref()
        .map(|c| c.view())
        .ok_or_else(|| Error::Internal("8-bit moments without a code book".into()))
}

/// `n` elements of `t` from element `from`, as a flat tensor of its own.
fn part(t: &TensorRef, from: usize, n: usize) -> TensorRef {
    let w = t.dtype.size_in_bytes() as u64;
    TensorRef {
        block: t.block.part(from as u64 * w, n as u64 * w),
        shape: Shape::new(&[n]),
        dtype: t.dtype,
    }
}

/// The device window the streamed moments pass through: f32 `m`, `v`, and
/// 8-bit codes `m`, `v` with their scales, each where some parameter needs it.
#[derive(Default)]
struct Window {
    f32: Option<[DeviceTensor; 2]>,
    q8: Option<[DeviceTensor; 3]>,
}

impl Window {
    fn alloc(device: &mut Device, f32_len: usize, q8_len: usize) -> Result<Window> {
        device.set_tag(Tag::new(
            MemPhase::Optimizer,
            "adamw_window",
            TensorKind::OptimizerState,
        ));
        let mut shapes = vec![];
        if f32_len > 0 {
            shapes.extend([(f32_len, DType::F32), (f32_len, DType::F32)]);
        }
        if q8_len > 0 {
            let scales = (2 * quant::blocks(q8_len), DType::F32);
            shapes.extend([(q8_len, DType::U8), (q8_len, DType::U8), scales]);
        }
        let mut held = Vec::with_capacity(shapes.len());
        for (n, dt) in shapes {
            match device.alloc(Shape::new(&[n]), dt) {
                Ok(t) => held.push(t),
                Err(e) => {
                    for t in held {
                        device.free(t);
                    }
                    return Err(e);
                }
            }
        }
        let mut it = held.into_iter();
        let mut next = || it.next().expect("allocated above");
        Ok(Window {
            f32: (f32_len > 0).then(|| [next(), next()]),
            q8: (q8_len > 0).then(|| [next(), next(), next()]),
        })
    }

    fn free(self, device: &mut Device) {
        for t in self
            .f32
            .into_iter()
            .flatten()
            .chain(self.q8.into_iter().flatten())
        {
            device.free(t);
        }
    }

    fn tensors(&self, q8: bool) -> Result<&[DeviceTensor]> {
        let w: Option<&[DeviceTensor]> = match q8 {
            false => self.f32.as_ref().map(|a| &a[..]),
            true => self.q8.as_ref().map(|a| &a[..]),
        };
        w.ok_or_else(|| Error::Internal("no window for these moments".into()))
    }
}

fn host(s: &Store) -> Result<&crate::memory::HostBuf> {
    match s {
        Store::Host(h) => Ok(h),
        Store::Device(_) => Err(Error::Internal("moments split between pools".into())),
    }
}

/// The update of parameters whose moments are in the host pool: each chunk
/// of moments copied into the window, updated there with the parameter's
/// chunk, and copied back.
fn stream(
    device: &mut Device,
    state: &ModelState,
    params: &[(&ParamState, &TensorRef)],
    args: &AdamWStep,
) -> Result<()> {
    let len = |q8: bool| {
        params
            .iter()
            .filter(|(p, _)| p.moments.is_q8() == q8)
            .map(|(p, _)| p.spec.shape.numel().min(window_elems()))
            .max()
            .unwrap_or(0)
    };
    let window = Window::alloc(device, len(false), len(true))?;
    let r = params.iter().try_for_each(|&(p, g)| {
        let n = p.spec.shape.numel();
        let w = window_elems();
        (0..n).step_by(w).try_for_each(|a| {
            let k = w.min(n - a);
            stream_chunk(device, state, &window, p, g, a, k, args)
        })
    });
    window.free(device);
    r
}

#[allow(clippy::too_many_arguments)]
fn stream_chunk(
    device: &mut Device,
    state: &ModelState,
    window: &Window,
    p: &ParamState,
    g: &TensorRef,
    a: usize,
    k: usize,
    args: &AdamWStep,
) -> Result<()> {
    let mo = &p.moments;
    let (hm, hv) = (host(&mo.m)?, host(&mo.v)?);
    let param = part(p.value.view(), a, k);
    let grad = part(g, a, k);
    let shadow = p.shadow.as_ref().map(|s| part(s.view(), a, k));
    let w = window.tensors(mo.is_q8())?;
    match &mo.scales {
        None => {
            let (wm, wv) = (part(w[0].view(), 0, k), part(w[1].view(), 0, k));
            device.copy_in(hm, a, &wm)?;
            device.copy_in(hv, a, &wv)?;
            let slot = AdamWSlot {
                param: &param,
                grad: &grad,
                m: &wm,
                v: &wv,
                decay: p.spec.decays(),
                shadow: shadow.as_ref(),
            };
            let span = Span::new(MemPhase::Optimizer, "optimizer", "adamw");
            device.timed(span, |b| b.adamw(&[slot], args))?;
            device.copy_out(&wm, hm, a)?;
            device.copy_out(&wv, hv, a)
        }
        Some(s) => {
            let hs = host(s)?;
            let (wm, wv) = (part(w[0].view(), 0, k), part(w[1].view(), 0, k));
            // The chunk's scales: m's at [0, cb), v's at [cb, 2·cb).
            let (cb, nb, b0) = (
                quant::blocks(k),
                quant::blocks(p.spec.shape.numel()),
                a / quant::Q8_BLOCK,
            );
            let ws = part(w[2].view(), 0, 2 * cb);
            let (ws_m, ws_v) = (part(&ws, 0, cb), part(&ws, cb, cb));
            device.copy_in(hm, a, &wm)?;
            device.copy_in(hv, a, &wv)?;
            device.copy_in(hs, b0, &ws_m)?;
            device.copy_in(hs, nb + b0, &ws_v)?;
            let slot = AdamWQ8Slot {
                param: &param,
                grad: &grad,
                m: &wm,
                v: &wv,
                scales: &ws,
                decay: p.spec.decays(),
                shadow: shadow.as_ref(),
            };
            let book = codebook(state)?;
            let span = Span::new(MemPhase::Optimizer, "optimizer", "adamw_q8");
            device.timed(span, |b| b.adamw_q8(&[slot], args, book))?;
            device.copy_out(&wm, hm, a)?;
            device.copy_out(&wv, hv, a)?;
            device.copy_out(&ws_m, hs, b0)?;
            device.copy_out(&ws_v, hs, nb + b0)
        }
    }
}
