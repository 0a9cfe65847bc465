//! The model state a run keeps between steps: each parameter's master
//! weights, its low-precision copy, and AdamW's moments in the format and
//! the pool the plan's levers chose ([`Placement`]: f32 or 8-bit, on the
//! device or in the host pool). Placed once, moved when recovery escalates to
//! offload, read and written by checkpoints.

use std::collections::HashMap;

use super::levers::Placement;
use crate::backend::{Device, DeviceTensor, TensorRef};
use crate::error::Result;
use crate::graph::ops::Op;
use crate::graph::{Graph, Value, ValueKind};
use crate::memory::{HostBuf, MemPhase, Tag, TensorKind};
use crate::nn::ParamSpec;
use crate::optim::quant;
use crate::rng::Rng;
use crate::tensor::{DType, HostTensor, Shape};

/// A tensor of the model state, on the device or in the host pool.
#[derive(Debug)]
pub enum Store {
    /// In device memory.
    Device(DeviceTensor),
    /// In the host pool.
    Host(HostBuf),
}

impl Store {
    fn alloc(device: &mut Device, shape: Shape, dtype: DType, host: bool) -> Result<Store> {
        Ok(match host {
            true => Store::Host(device.host_alloc(shape, dtype)?),
            false => Store::Device(device.alloc(shape, dtype)?),
        })
    }

    /// Gives the memory back to its pool.
    pub fn free(self, device: &mut Device) {
        match self {
            Store::Device(t) => device.free(t),
            Store::Host(h) => device.host_free(h),
        }
    }

    /// The tensor's shape.
    pub fn shape(&self) -> &Shape {
        match self {
            Store::Device(t) => t.shape(),
            Store::Host(h) => &h.shape,
        }
    }

    /// The tensor's element type.
    pub fn dtype(&self) -> DType {
        match self {
            Store::Device(t) => t.dtype(),
            Store::Host(h) => h.dtype,
        }
    }

    /// Whether it lives in the host pool.
    pub fn on_host(&self) -> bool {
        matches!(self, Store::Host(_))
    }

    /// The device tensor, if on the device.
    pub fn device(&self) -> Option<&TensorRef> {
        match self {
            Store::Device(t) => Some(t.view()),
            Store::Host(_) => None,
        }
    }

    /// A copy of the contents on the host (zeros on a simulated device).
    pub fn read(&self, device: &mut Device) -> Result<HostTensor> {
        match self {
            Store::Device(t) => device.download(t.view()),
            Store::Host(h) => {
                let mut out = HostTensor::zeros(h.shape.clone(), h.dtype);
                if let Some(b) = device.host().bytes(h) {
                    out.data.copy_from_slice(b);
                }
                Ok(out)
            }
        }
    }

    /// Overwrites the contents with `t` (same byte size and dtype).
    pub fn write(&self, device: &mut Device, t: &HostTensor) -> Result<()> {
        if t.dtype != self.dtype() || t.shape.numel() != self.shape().numel() {
            return Err(crate::error::Error::shape(
                "state write",
                format!(
                    "{} {} into {} {}",
                    t.shape,
                    t.dtype,
                    self.shape(),
                    self.dtype()
                ),
            ));
        }
        match self {
            Store::Device(d) => device.backend_mut().write(d.view(), &t.data),
            Store::Host(h) => {
                if let Some(b) = device.host().bytes_mut(h) {
                    b.copy_from_slice(&t.data);
                }
                Ok(())
            }
        }
    }
}

/// One parameter's AdamW moments: f32 of the parameter's shape, or 8-bit
/// codes `[n]` with block scales.
#[derive(Debug)]
pub struct Moments {
    /// The first moment (f32, or u8 codes).
    pub m: Store,
    /// The second moment (f32, or u8 codes).
    pub v: Store,
    /// 8-bit state: the blocks' scales `[2 · blocks(n)]` f32, `m`'s then `v`'s.
    pub scales: Option<Store>,
}

/// A parameter's moments as a checkpoint holds them.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedMoments {
    /// `exp_avg`: f32 of the parameter's shape, or u8 codes `[n]`.
    pub m: HostTensor,
    /// `exp_avg_sq`, likewise.
    pub v: HostTensor,
    /// 8-bit state's block scales `[2 · blocks(n)]`.
    pub scales: Option<HostTensor>,
}

impl Moments {
    /// Zeroed moments for `spec` as `at` says (8-bit only for tensors of at
    /// least [`quant::Q8_MIN_NUMEL`] elements). Zero codes with zero scales
    /// decode to zero, so both formats start from m = v = 0.
    fn place(device: &mut Device, spec: &ParamSpec, at: Placement) -> Result<Moments> {
        let n = spec.shape.numel();
        if at.q8 && quant::quantised(n) {
            let m = Store::alloc(device, Shape::new(&[n]), DType::U8, at.host)?;
            let v = Store::alloc(device, Shape::new(&[n]), DType::U8, at.host)?;
            let s = Shape::new(&[2 * quant::blocks(n)]);
            let scales = Store::alloc(device, s, DType::F32, at.host)?;
            if !at.host {
                for t in [&m, &v, &scales] {
                    zero(device, t)?;
                }
            }
            return Ok(Moments {
                m,
                v,
                scales: Some(scales),
            });
        }
        let mut f32_moment = || -> Result<Store> {
            let s = Store::alloc(device, spec.shape.clone(), DType::F32, at.host)?;
            if !at.host {
                zero(device, &s)?;
            }
            Ok(s)
        };
        let m = f32_moment()?;
        let v = f32_moment()?;
        Ok(Moments { m, v, scales: None })
    }

    /// Whether the moments are 8-bit.
    pub fn is_q8(&self) -> bool {
        self.scales.is_some()
    }

    /// Whether they live in the host pool.
    pub fn on_host(&self) -> bool {
        self.m.on_host()
    }

    /// Gives every tensor back.
    pub fn free(self, device: &mut Device) {
        self.m.free(device);
        self.v.free(device);
        if let Some(s) = self.scales {
            s.free(device);
        }
    }

    /// A copy on the host, for checkpoints and tests.
    pub fn read(&self, device: &mut Device) -> Result<SavedMoments> {
        Ok(SavedMoments {
            m: self.m.read(device)?,
            v: self.v.read(device)?,
            scales: match &self.scales {
                Some(s) => Some(s.read(device)?),
                None => None,
            },
        })
    }

    /// Overwrites the moments with `saved`, which must have their format.
    pub fn write(&self, device: &mut Device, saved: &SavedMoments) -> Result<()> {
        match (&self.scales, &saved.scales) {
            (Some(s), Some(t)) => s.write(device, t)?,
            (None, None) => {}
            (mine, _) => {
                return Err(crate::error::Error::invalid(
                    "optimizer state",
                    format!(
                        "the checkpoint's AdamW state is {}, this run's is {}; resume with --optimizer-state {}",
                        if saved.scales.is_some() { "8-bit" } else { "f32" },
                        if mine.is_some() { "8-bit" } else { "f32" },
                        if saved.scales.is_some() { "8bit" } else { "f32" },
                    ),
                ))
            }
        }
        self.m.write(device, &saved.m)?;
        self.v.write(device, &saved.v)
    }

    /// Moves the moments to the host pool (`host`) or the device, the old
    /// tensors freed after the copy; the format stays. A no-op where they
    /// already are; on an error they stay where they were.
    fn move_to(&mut self, device: &mut Device, spec: &ParamSpec, host: bool) -> Result<()> {
        if self.on_host() == host {
            return Ok(());
        }
        let at = Placement {
            host,
            q8: self.is_q8(),
        };
        let new = Moments::place(device, spec, at)?;
        if let Err(e) = self.read(device).and_then(|s| new.write(device, &s)) {
            new.free(device);
            return Err(e);
        }
        std::mem::replace(self, new).free(device);
        Ok(())
    }
}

fn zero(device: &mut Device, s: &Store) -> Result<()> {
    if device.is_simulated() {
        return Ok(());
    }
    s.write(device, &HostTensor::zeros(s.shape().clone(), s.dtype()))
}

/// One parameter's state.
pub struct ParamState {
    /// What the model declared.
    pub spec: ParamSpec,
    /// The master weights, f32 on the device.
    pub value: DeviceTensor,
    /// AdamW's moments.
    pub moments: Moments,
    /// The low-precision copy autocast's forward reads instead of casting
    /// the weights every step; AdamW keeps it current
    /// ([`super::step::StepCompiler::low_copies`]).
    pub shadow: Option<DeviceTensor>,
}

impl ParamState {
    /// Rewrites the low-precision copy from the master weights, after they
    /// were written other than by AdamW (at init, on resume).
    pub fn refresh_shadow(&self, device: &mut Device) -> Result<()> {
        if let Some(s) = &self.shadow {
            let cast = Op::Cast { to: s.dtype() };
            device
                .backend_mut()
                .run(&cast, &[self.value.view()], &[s.view()])?;
        }
        Ok(())
    }
}

/// The parameters a graph casts to low precision, each with the cast's output
/// value and dtype: the casts a shadow copy stands in for.
pub fn param_casts(g: &Graph) -> Vec<(&str, Value, DType)> {
    g.nodes()
        .iter()
        .filter_map(
            |n| match (&n.op, n.inputs.first().map(|&v| &g.info(v).kind)) {
                (Op::Cast { to }, Some(ValueKind::Param(name))) => {
                    Some((name.as_str(), n.outputs[0], *to))
                }
                _ => None,
            },
        )
        .collect()
}

/// Everything a model keeps between steps.
pub struct ModelState {
    /// Every parameter, in `param_specs` order.
    pub params: Vec<ParamState>,
    /// 8-bit state's code book `[CODEBOOK_LEN]` f32 on the device, when any
    /// parameter has 8-bit moments.
    pub codebook: Option<DeviceTensor>,
    /// Where the moments are.
    pub placement: Placement,
    /// The backend libraries' workspace, allocated once at setup; held so the
    /// block lives as long as the state.
    _workspace: Option<DeviceTensor>,
}

impl ModelState {
    /// Places each parameter (weights, then its moments as `at` says, then
    /// its low-precision copy) and then `workspace_bytes` of library
    /// workspace. With `init`, weights are drawn from it and moments are
    /// zero; without (a simulation), tensors are only allocated.
    pub fn place(
        device: &mut Device,
        specs: Vec<ParamSpec>,
        shadows: &HashMap<String, DType>,
        mut init: Option<&mut Rng>,
        workspace_bytes: u64,
        at: Placement,
    ) -> Result<ModelState> {
        let weight = Tag::new(MemPhase::Setup, "param", TensorKind::Weight);
        let low = Tag::new(MemPhase::Setup, "param_low_copy", TensorKind::Weight);
        let state = Tag::new(MemPhase::Setup, "adamw_state", TensorKind::OptimizerState);
        let mut params = Vec::with_capacity(specs.len());
        for spec in specs {
            let values = init.as_deref_mut().map(|rng| spec.init_values(rng));
            device.set_tag(weight);
            let value = match values {
                Some(h) => device.upload(&h)?,
                None => device.alloc(spec.shape.clone(), DType::F32)?,
            };
            device.set_tag(state);
            let moments = Moments::place(device, &spec, at)?;
            let shadow = match shadows.get(&spec.name) {
                Some(&dt) => {
                    device.set_tag(low);
                    Some(device.alloc(spec.shape.clone(), dt)?)
                }
                None => None,
            };
            let p = ParamState {
                spec,
                value,
                moments,
                shadow,
            };
            if init.is_some() {
                p.refresh_shadow(device)?;
            }
            params.push(p);
        }
        let codebook = match params.iter().any(|p| p.moments.is_q8()) {
            true => {
                device.set_tag(state);
                let book: Vec<f64> = quant::codebook().iter().map(|&c| c as f64).collect();
                let shape = Shape::new(&[quant::CODEBOOK_LEN]);
                Some(device.upload(&HostTensor::from_f64_as(shape, &book, DType::F32)?)?)
            }
            false => None,
        };
        let workspace = match workspace_bytes {
            0 => None,
            bytes => {
                device.set_tag(Tag::new(
                    MemPhase::Setup,
                    "workspace",
                    TensorKind::Workspace,
                ));
                let w = device.alloc(Shape::new(&[bytes.div_ceil(4) as usize]), DType::F32)?;
                device.backend_mut().set_workspace(Some(w.view()))?;
                Some(w)
            }
        };
        Ok(ModelState {
            params,
            codebook,
            placement: at,
            _workspace: workspace,
        })
    }

    /// Moves every parameter's moments to the host pool (`host`) or the
    /// device, one parameter at a time, so the move itself needs at most one
    /// parameter's moments twice. On an error the parameters already moved
    /// stay moved and the state stays consistent.
    pub fn move_moments(&mut self, device: &mut Device, host: bool) -> Result<()> {
        device.set_tag(Tag::new(
            MemPhase::Setup,
            "adamw_state",
            TensorKind::OptimizerState,
        ));
        for p in &mut self.params {
            p.moments.move_to(device, &p.spec, host)?;
        }
        self.placement.host = host;
        Ok(())
    }
}
