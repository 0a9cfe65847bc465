//! The wgpu backend: every op as a WGSL compute shader (`shaders/*.wgsl`), for
//! any GPU with Vulkan, Metal or DX12, and CPUs through Mesa's lavapipe.
//!
//! Kernels are recorded into one command encoder and submitted only when the
//! host needs data back (a read) or writes data in (an upload must not overtake
//! kernels recorded before it). Each shader is compiled per storage type: f32,
//! and f16 where the adapter has SHADER_F16 (arithmetic stays f32 inside the
//! kernels), and bf16 packed two values to a 32-bit word (the shader is
//! rewritten at compile time; stores round to nearest-even).
//!
//! `ops/` holds one file per op family with its shaders and dispatches;
//! `optim` the optimizer's kernels; the rest is infrastructure: `adapter`
//! (discovery), `pipeline` (variants and the pipeline cache), `bf16` (the
//! packing rewrite), `dispatch` (recording and transfers), `memory` (buffers).

mod adapter;
mod bf16;
mod dispatch;
mod memory;
pub mod ops;
mod optim;
mod pipeline;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use adapter::{adapters, AdapterSummary};
use memory::Buffers;
pub use memory::WgpuMemory;
use ops::{
    attention, cast, cross_entropy, elementwise, embedding, layernorm, matmul, reduce, rmsnorm,
    rope, shape, softmax,
};
use pipeline::Variant;

use super::{AdamWSlot, AdamWStep, Backend, TensorRef};
use crate::error::{Error, Result};
use crate::graph::ops::{storage_dtype, Op};
use crate::tensor::DType;

/// The wgpu backend on one adapter: its device and queue, the shader modules and
/// pipelines compiled so far, and the command encoder kernels are recorded into.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    buffers: Arc<Mutex<Buffers>>,
    modules: HashMap<(&'static str, Variant), wgpu::ShaderModule>,
    pipelines: HashMap<(&'static str, &'static str, Variant), wgpu::ComputePipeline>,
    encoder: Option<wgpu::CommandEncoder>,
    max_binding: u64,
    /// The adapter can store and compute f16 in shaders.
    f16: bool,
    /// The variant the kernels dispatched next are compiled for.
    variant: Variant,
    /// The adapter this backend opened.
    pub adapter: AdapterSummary,
}

fn unsupported(what: String) -> Error {
    Error::Unsupported {
        backend: "wgpu",
        what,
        hint: "use TrainConfig::precision f32, smaller shapes, or the cpu backend",
    }
}

impl WgpuBackend {
    /// Opens the best adapter (`allow_cpu`: lavapipe too). `None` when wgpu finds
    /// no adapter at all.
    pub fn open(allow_cpu: bool) -> Result<Option<(WgpuBackend, WgpuMemory)>> {
        let Some(adapter) = adapter::pick_adapter(allow_cpu) else {
            return Ok(None);
        };
        let summary = adapter::summary(&adapter);
        let limits = adapter.limits();
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let features = if f16 {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("headroom"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::Unsupported {
            backend: "wgpu",
            what: format!("a device on {} ({e})", summary.name),
            hint: "check the GPU driver, or use the cpu backend (Device::by_name)",
        })?;
        let align = limits.min_storage_buffer_offset_alignment as u64;
        if 512 % align != 0 {
            return Err(unsupported(format!(
                "storage offset alignment {align} (headroom needs it to divide 512)"
            )));
        }
        let total = adapter::memory_total(&adapter)?;
        let buffers = Arc::new(Mutex::new(Buffers::default()));
        let mem = WgpuMemory {
            device: device.clone(),
            buffers: buffers.clone(),
            max_buffer: limits.max_buffer_size,
            total,
            used: 0,
        };
        log::info!(
            "wgpu adapter: {} ({}, {})",
            summary.name,
            summary.device_type,
            summary.backend
        );
        Ok(Some((
            WgpuBackend {
                device,
                queue,
                buffers,
                modules: HashMap::new(),
                pipelines: HashMap::new(),
                encoder: None,
                max_binding: limits.max_storage_buffer_binding_size,
                f16,
                variant: Variant::T(DType::F32),
                adapter: summary,
            },
            mem,
        )))
    }

    /// Checks the dtypes and picks the variant: `graph::ops::storage_dtype`
    /// (saved statistics stay f32 in every variant; a mixed op's family sets
    /// its (in, out) variant itself).
    fn select(&mut self, op: &'static str, ts: &[&TensorRef]) -> Result<()> {
        for t in ts {
            let ok = match t.dtype {
                DType::F32 | DType::I32 | DType::BF16 => true,
                DType::F16 => self.f16,
                // Bytes are the optimizer's own (8-bit state); no op reads them.
                DType::F64 | DType::U8 => false,
            };
            if !ok {
                return Err(unsupported(format!("{} tensors (in {op})", t.dtype)));
            }
        }
        self.variant = Variant::T(storage_dtype(ts.iter().map(|t| t.dtype)));
        Ok(())
    }
}

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn supports(&self, dtype: DType) -> bool {
        match dtype {
            DType::F32 | DType::I32 | DType::BF16 => true,
            DType::F16 => self.f16,
            DType::U8 => true,
            DType::F64 => false,
        }
    }

    /// f16 where the adapter computes it; else bf16 packed two to a word.
    fn preferred_low_precision(&self) -> Option<DType> {
        Some(if self.f16 { DType::F16 } else { DType::BF16 })
    }

    fn run(&mut self, op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()> {
        let all: Vec<&TensorRef> = ins.iter().chain(outs).copied().collect();
        self.select(op.name(), &all)?;
        match op {
            Op::Embedding => embedding::embedding_forward(self, ins, outs),
            Op::EmbeddingBackward { vocab } => {
                embedding::embedding_backward(self, ins, outs, *vocab)
            }
            Op::MatMul { ta, tb } => matmul::matmul_forward(self, ins, outs, *ta, *tb),
            Op::Add => elementwise::add_forward(self, ins, outs),
            Op::Mul => elementwise::mul_forward(self, ins, outs),
            Op::Scale { factor } => elementwise::scale_forward(self, ins, outs, *factor),
            Op::Gelu => {
                elementwise::activation_forward(self, elementwise::Activation::Gelu, ins, outs)
            }
            Op::GeluBackward => {
                elementwise::activation_backward(self, elementwise::Activation::Gelu, ins, outs)
            }
            Op::BiasGelu => elementwise::bias_gelu_forward(self, ins, outs),
            Op::BiasGeluBackward => elementwise::bias_gelu_backward(self, ins, outs),
            Op::Fill { value, .. } => elementwise::fill_forward(self, outs, *value),
            Op::Cast { to } => cast::cast_forward(self, ins, outs, *to),
            Op::LayerNorm { eps, .. } => layernorm::layernorm_forward(self, ins, outs, *eps),
            Op::LayerNormBackward => layernorm::layernorm_backward(self, ins, outs),
            Op::RmsNorm { eps, .. } => rmsnorm::rmsnorm_forward(self, ins, outs, *eps),
            Op::RmsNormBackward => rmsnorm::rmsnorm_backward(self, ins, outs),
            Op::Silu => {
                elementwise::activation_forward(self, elementwise::Activation::Silu, ins, outs)
            }
            Op::SiluBackward => {
                elementwise::activation_backward(self, elementwise::Activation::Silu, ins, outs)
            }
            Op::Rope {
                n_head,
                n_kv_head,
                theta,
                inverse,
            } => rope::rope_forward(self, ins, outs, (*n_head, *n_kv_head), *theta, *inverse),
            Op::Attention { n_head, n_kv_head } => {
                attention::attention_forward(self, ins, outs, *n_head, *n_kv_head)
            }
            Op::AttentionBackward { n_head, n_kv_head } => {
                attention::attention_backward(self, ins, outs, *n_head, *n_kv_head)
            }
            Op::Softmax => softmax::softmax_forward(self, ins, outs),
            Op::SoftmaxBackward => softmax::softmax_backward(self, ins, outs),
            Op::CrossEntropy { classes } => {
                cross_entropy::cross_entropy_forward(self, ins, outs, *classes)
            }
            Op::CrossEntropyBackward { classes } => {
                cross_entropy::cross_entropy_backward(self, ins, outs, *classes)
            }
            Op::CrossEntropyFused { classes } => {
                cross_entropy::cross_entropy_fused(self, ins, outs, *classes)
            }
            Op::Transpose { a, b } => shape::transpose_forward(self, ins, outs, *a, *b),
            Op::Split { axis, .. } => shape::split_forward(self, ins, outs, *axis),
            Op::Concat { axis } => shape::concat_forward(self, ins, outs, *axis),
            Op::Sum { axes } => reduce::sum_forward(self, ins, outs, axes, false),
            Op::Mean { axes } => reduce::sum_forward(self, ins, outs, axes, true),
            Op::Expand { axes, .. } => reduce::expand_forward(self, ins, outs, axes),
            Op::Reshape { .. } => Err(Error::Internal("reshape reached a kernel".into())),
        }
    }

    fn write(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()> {
        self.write_tensor(dst, data)
    }

    fn read(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        self.read_tensor(src)
    }

    fn accumulate(&mut self, dst: &TensorRef, src: &TensorRef) -> Result<()> {
        self.select("accumulate", &[dst, src])?;
        elementwise::accumulate(self, dst, src)
    }

    fn sum_squares(&mut self, ts: &[&TensorRef]) -> Result<f64> {
        optim::sum_squares(self, ts)
    }

    fn adamw(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        optim::adamw(self, slots, s)
    }

    fn adamw_q8(
        &mut self,
        slots: &[crate::backend::AdamWQ8Slot],
        s: &AdamWStep,
        codebook: &TensorRef,
    ) -> Result<()> {
        optim::adamw_q8(self, slots, s, codebook)
    }
}
