//! The wgpu backend: every op as a WGSL compute shader (`shaders/*.wgsl`), for
//! any GPU with Vulkan, Metal or DX12, and CPUs through Mesa's lavapipe.
//!
//! Kernels are recorded into one command encoder and submitted only when the
//! host needs data back (a read) or writes data in (an upload must not overtake
//! kernels recorded before it). Each shader is compiled per storage type: f32,
//! and f16 where the adapter has SHADER_F16 (arithmetic stays f32 inside the
//! kernels), and bf16 packed two values to a 32-bit word (the shader is
//! rewritten at compile time; stores round to nearest-even).

mod memory;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use memory::Buffers;
pub use memory::WgpuMemory;

use super::{AdamWSlot, AdamWStep, Backend, TensorRef};
use crate::error::{Error, Result};
use crate::graph::ops::reduce::reduce_plan;
use crate::graph::ops::shape::{slices, transpose_view};
use crate::graph::ops::{attention, matmul, Op};
use crate::tensor::DType;

const COMMON: &str = include_str!("../../../shaders/common.wgsl");

/// The shader files, one per op family.
const SHADERS: &[(&str, &str)] = &[
    (
        "elementwise",
        include_str!("../../../shaders/elementwise.wgsl"),
    ),
    ("matmul", include_str!("../../../shaders/matmul.wgsl")),
    ("layernorm", include_str!("../../../shaders/layernorm.wgsl")),
    (
        "layernorm_backward",
        include_str!("../../../shaders/layernorm_backward.wgsl"),
    ),
    ("softmax", include_str!("../../../shaders/softmax.wgsl")),
    (
        "cross_entropy",
        include_str!("../../../shaders/cross_entropy.wgsl"),
    ),
    ("embedding", include_str!("../../../shaders/embedding.wgsl")),
    ("attention", include_str!("../../../shaders/attention.wgsl")),
    (
        "attention_backward",
        include_str!("../../../shaders/attention_backward.wgsl"),
    ),
    ("shape", include_str!("../../../shaders/shape.wgsl")),
    ("reduce", include_str!("../../../shaders/reduce.wgsl")),
    ("optim", include_str!("../../../shaders/optim.wgsl")),
    ("cast", include_str!("../../../shaders/cast.wgsl")),
    (
        "sum_squares",
        include_str!("../../../shaders/sum_squares.wgsl"),
    ),
];

/// Every (file, entry point) the backend dispatches, for the compile test.
pub const KERNELS: &[(&str, &str)] = &[
    ("elementwise", "add"),
    ("elementwise", "mul"),
    ("elementwise", "scale"),
    ("elementwise", "copy"),
    ("elementwise", "fill"),
    ("elementwise", "accumulate"),
    ("elementwise", "gelu"),
    ("elementwise", "gelu_backward"),
    ("elementwise", "bias_gelu"),
    ("elementwise", "bias_gelu_backward"),
    ("matmul", "main"),
    ("layernorm", "forward"),
    ("layernorm_backward", "dx"),
    ("layernorm_backward", "dwdb"),
    ("softmax", "forward"),
    ("softmax", "backward"),
    ("cross_entropy", "forward"),
    ("cross_entropy", "backward"),
    ("embedding", "forward"),
    ("embedding", "backward"),
    ("attention", "forward"),
    ("attention_backward", "dq"),
    ("attention_backward", "dkdv"),
    ("shape", "transpose"),
    ("shape", "split_part"),
    ("shape", "concat_part"),
    ("reduce", "sum"),
    ("reduce", "expand"),
    ("optim", "adamw"),
    ("sum_squares", "main"),
    ("cast", "main"),
];

/// One adapter as `headroom devices` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    /// The graphics API wgpu drives it through, as wgpu names it ("Vulkan",
    /// "Metal", "Dx12", "Gl", ...).
    pub backend: String,
    /// The adapter's name as its driver reports it.
    pub name: String,
    /// "DiscreteGpu", "IntegratedGpu", "VirtualGpu", "Cpu" or "Other".
    pub device_type: String,
    /// Driver name and version information.
    pub driver: String,
    /// Whether shaders can use f16 (`SHADER_F16`); without it f16 tensors are refused.
    pub shader_f16: bool,
    /// Largest buffer the adapter creates, in bytes: the cap on one segment.
    pub max_buffer_bytes: u64,
    /// Largest range one storage binding may span, in bytes: the cap on one
    /// tensor a kernel reads or writes.
    pub max_storage_binding_bytes: u64,
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle())
}

fn summary(a: &wgpu::Adapter) -> AdapterSummary {
    let i = a.get_info();
    let l = a.limits();
    AdapterSummary {
        backend: format!("{:?}", i.backend),
        name: i.name,
        device_type: format!("{:?}", i.device_type),
        driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
        shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
        max_buffer_bytes: l.max_buffer_size,
        max_storage_binding_bytes: l.max_storage_buffer_binding_size,
    }
}

/// Every adapter wgpu finds on this machine.
pub fn adapters() -> Vec<AdapterSummary> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(summary)
        .collect()
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The best adapter; a CPU-type one (lavapipe) only when `allow_cpu`.
fn pick_adapter(allow_cpu: bool) -> Option<wgpu::Adapter> {
    let mut all = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    all.retain(|a| allow_cpu || a.get_info().device_type != wgpu::DeviceType::Cpu);
    all.sort_by_key(|a| rank(a.get_info().device_type));
    all.into_iter().next()
}

/// Which storage types a shader is compiled for: `T` for tensors, or the
/// input and output types of a cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Variant {
    T(DType),
    Cast(DType, DType),
}

fn wgsl_type(d: DType) -> &'static str {
    if d == DType::F16 {
        "f16"
    } else {
        // bf16 bindings are rewritten to packed words; their alias is unused.
        "f32"
    }
}

/// Rewrites a shader so that the bindings typed `array<X>` for each X in
/// `packed` hold bf16 values two to a u32 word: loads `f32(name[i])` become
/// `ld_name(i)` (widening), stores `name[i] = X(v);` become `st_name(i, v)`
/// (round to nearest-even, written with a compare-exchange loop because the
/// other half of the word belongs to another thread).
fn pack_bf16(src: &str, packed: &[&str]) -> String {
    let decl =
        regex::Regex::new(r"var<storage, read_write> (\w+): array<(\w+)>;").expect("static regex");
    let names: Vec<String> = decl
        .captures_iter(src)
        .filter(|c| packed.contains(&&c[2]))
        .map(|c| c[1].to_string())
        .collect();
    let mut out = src.to_string();
    let mut helpers = String::new();
    for n in &names {
        let d = regex::Regex::new(&format!(r"var<storage, read_write> {n}: array<\w+>;"))
            .expect("regex");
        out = d
            .replace_all(
                &out,
                format!("var<storage, read_write> {n}: array<atomic<u32>>;").as_str(),
            )
            .into_owned();
        let st = regex::Regex::new(&format!(r"\b{n}\[([^\]]*)\] = \w+\((.*)\);")).expect("regex");
        out = st
            .replace_all(&out, format!("st_{n}($1, $2);").as_str())
            .into_owned();
        helpers.push_str(&format!(
            "fn ld_{n}(i_: u32) -> f32 {{\n    let w_ = atomicLoad(&{n}[i_ >> 1u]);\n    let h_ = select(w_ & 0xffffu, w_ >> 16u, (i_ & 1u) == 1u);\n    return bitcast<f32>(h_ << 16u);\n}}\n\
             fn st_{n}(i_: u32, v_: f32) {{\n    let bits_ = bitcast<u32>(v_);\n    var r_ = (bits_ + 0x7fffu + ((bits_ >> 16u) & 1u)) >> 16u;\n    if (v_ != v_) {{ r_ = 0x7fc0u; }}\n    let odd_ = (i_ & 1u) == 1u;\n    loop {{\n        let old_ = atomicLoad(&{n}[i_ >> 1u]);\n        let new_ = select((old_ & 0xffff0000u) | r_, (old_ & 0xffffu) | (r_ << 16u), odd_);\n        if (atomicCompareExchangeWeak(&{n}[i_ >> 1u], old_, new_).exchanged) {{ break; }}\n    }}\n}}\n"
        ));
    }
    for n in &names {
        let ld = regex::Regex::new(&format!(r"f32\({n}\[([^\]]*)\]\)")).expect("regex");
        out = ld
            .replace_all(&out, format!("ld_{n}($1)").as_str())
            .into_owned();
    }
    format!("{out}\n{helpers}")
}

impl Variant {
    /// The declarations prepended to a shader for this variant.
    fn header(self) -> String {
        let (decls, f16) = match self {
            Variant::T(d) => (format!("alias T = {};\n", wgsl_type(d)), d == DType::F16),
            Variant::Cast(a, b) => (
                format!(
                    "alias TI = {};\nalias TO = {};\n",
                    wgsl_type(a),
                    wgsl_type(b)
                ),
                a == DType::F16 || b == DType::F16,
            ),
        };
        if f16 {
            format!("enable f16;\n{decls}")
        } else {
            decls
        }
    }
}

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

enum Bind<'a> {
    T(&'a TensorRef),
    B(&'a wgpu::Buffer),
}

fn groups_1d(n: usize) -> (u32, u32, u32) {
    let wg = n.div_ceil(64).max(1);
    let x = wg.min(65535);
    (x as u32, wg.div_ceil(x) as u32, 1)
}

fn unsupported(what: String) -> Error {
    Error::Unsupported {
        backend: "wgpu",
        what,
        hint: "use TrainConfig::precision f32, smaller shapes, or the cpu backend",
    }
}

/// The adapter's memory as the budget sees it. wgpu reports no device memory
/// size: `HEADROOM_WGPU_MEMORY` (e.g. `8GiB`) says it; a CPU adapter shares the
/// host's; for a GPU without the variable the host's is assumed, with a warning,
/// since a percentage budget of it may exceed the card.
fn memory_total(adapter: &wgpu::Adapter) -> Result<u64> {
    if let Ok(v) = std::env::var("HEADROOM_WGPU_MEMORY") {
        return match crate::memory::Budget::parse(&v) {
            Ok(crate::memory::Budget::Bytes(b)) => Ok(b),
            _ => Err(Error::invalid(
                "HEADROOM_WGPU_MEMORY",
                format!("{v:?} is not a size; give the card's memory, e.g. 8GiB"),
            )),
        };
    }
    let host = crate::memory::RawMemory::total_bytes(&crate::backend::cpu::CpuMemory::default());
    let info = adapter.get_info();
    if info.device_type != wgpu::DeviceType::Cpu {
        log::warn!(
            "wgpu reports no memory size for {}: assuming the host's {}; set \
             HEADROOM_WGPU_MEMORY to the card's memory (e.g. 8GiB) or give the budget in bytes (Device::set_budget)",
            info.name,
            crate::memory::format_bytes(host)
        );
    }
    Ok(host)
}

impl WgpuBackend {
    /// Opens the best adapter (`allow_cpu`: lavapipe too). `None` when wgpu finds
    /// no adapter at all.
    pub fn open(allow_cpu: bool) -> Result<Option<(WgpuBackend, WgpuMemory)>> {
        let Some(adapter) = pick_adapter(allow_cpu) else {
            return Ok(None);
        };
        let summary = summary(&adapter);
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
        let total = memory_total(&adapter)?;
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

    fn pipeline(
        &mut self,
        file: &'static str,
        entry: &'static str,
    ) -> Result<wgpu::ComputePipeline> {
        let v = self.variant;
        if let Some(p) = self.pipelines.get(&(file, entry, v)) {
            return Ok(p.clone());
        }
        if !self.modules.contains_key(&(file, v)) {
            let src = SHADERS
                .iter()
                .find(|s| s.0 == file)
                .ok_or_else(|| Error::Internal(format!("no shader {file}")))?
                .1;
            let body = format!("{COMMON}\n{src}");
            let packed: Vec<&str> = match v {
                Variant::T(DType::BF16) => vec!["T"],
                Variant::Cast(a, b) => [(a, "TI"), (b, "TO")]
                    .into_iter()
                    .filter(|x| x.0 == DType::BF16)
                    .map(|x| x.1)
                    .collect(),
                _ => vec![],
            };
            let body = if packed.is_empty() {
                body
            } else {
                pack_bf16(&body, &packed)
            };
            let code = format!("{}{body}", v.header());
            let m = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(file),
                    source: wgpu::ShaderSource::Wgsl(code.into()),
                });
            self.modules.insert((file, v), m);
        }
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &self.modules[&(file, v)],
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        self.pipelines.insert((file, entry, v), p.clone());
        Ok(p)
    }

    /// Compiles every kernel (a missing or broken one fails here, not mid-run).
    pub fn compile_all(&mut self) -> Result<()> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut variants = vec![
            Variant::T(DType::F32),
            Variant::T(DType::BF16),
            Variant::Cast(DType::F32, DType::BF16),
            Variant::Cast(DType::BF16, DType::F32),
        ];
        if self.f16 {
            variants.extend([
                Variant::T(DType::F16),
                Variant::Cast(DType::F32, DType::F16),
                Variant::Cast(DType::F16, DType::F32),
            ]);
        }
        for v in variants {
            self.variant = v;
            for &(f, e) in KERNELS {
                if (f == "cast") == matches!(v, Variant::Cast(..)) {
                    self.pipeline(f, e)?;
                }
            }
        }
        self.variant = Variant::T(DType::F32);
        match pollster::block_on(scope.pop()) {
            None => Ok(()),
            Some(err) => Err(Error::Internal(format!(
                "WGSL kernels failed to compile: {err}"
            ))),
        }
    }

    fn dispatch(
        &mut self,
        file: &'static str,
        entry: &'static str,
        params: &[u32],
        binds: &[(u32, Bind)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let pipeline = self.pipeline(file, entry)?;
        let mut words = [0u32; 16];
        words[..params.len()].copy_from_slice(params);
        let pbuf = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let buffers = self
            .buffers
            .lock()
            .map_err(|_| Error::Internal("buffer table poisoned".into()))?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: pbuf.as_entire_binding(),
        }];
        for (binding, b) in binds {
            let resource = match b {
                Bind::T(t) => {
                    let size = t.byte_size().max(4).div_ceil(4) * 4;
                    if size > self.max_binding {
                        return Err(unsupported(format!(
                            "a {size}-byte tensor (the adapter binds at most {} bytes at once)",
                            self.max_binding
                        )));
                    }
                    let buf = buffers
                        .get(t.block.handle)
                        .ok_or_else(|| Error::Internal(format!("no buffer {}", t.block.handle)))?;
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf,
                        offset: t.block.offset,
                        size: NonZeroU64::new(size),
                    })
                }
                Bind::B(buf) => buf.as_entire_binding(),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource,
            });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        drop(buffers);
        let device = &self.device;
        let enc = self
            .encoder
            .get_or_insert_with(|| device.create_command_encoder(&Default::default()));
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        Ok(())
    }

    /// Submits what has been recorded.
    fn flush(&mut self) {
        if let Some(enc) = self.encoder.take() {
            self.queue.submit([enc.finish()]);
        }
    }

    fn read_buffer(&mut self, buf: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.max(4).div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let device = &self.device;
        let enc = self
            .encoder
            .get_or_insert_with(|| device.create_command_encoder(&Default::default()));
        enc.copy_buffer_to_buffer(buf, offset, &staging, 0, size);
        self.flush();
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Internal(format!("wgpu poll: {e}")))?;
        rx.recv()
            .map_err(|e| Error::Internal(format!("wgpu map: {e}")))?
            .map_err(|e| Error::Internal(format!("wgpu map: {e}")))?;
        let mut out = slice
            .get_mapped_range()
            .map_err(|e| Error::Internal(format!("wgpu map: {e:?}")))?
            .to_vec();
        staging.unmap();
        out.truncate(bytes as usize);
        Ok(out)
    }

    /// Checks the dtypes and picks the variant: the storage type of the first
    /// float operand (saved statistics stay f32 in every variant).
    fn select(&mut self, op: &'static str, ts: &[&TensorRef]) -> Result<()> {
        for t in ts {
            let ok = match t.dtype {
                DType::F32 | DType::I32 | DType::BF16 => true,
                DType::F16 => self.f16,
                DType::F64 => false,
            };
            if !ok {
                return Err(unsupported(format!("{} tensors (in {op})", t.dtype)));
            }
        }
        let dt = ts
            .iter()
            .map(|t| t.dtype)
            .find(|d| d.is_float())
            .unwrap_or(DType::F32);
        self.variant = Variant::T(dt);
        Ok(())
    }
}

fn u(x: usize) -> u32 {
    x as u32
}

fn f(x: f64) -> u32 {
    (x as f32).to_bits()
}

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn supports(&self, dtype: DType) -> bool {
        match dtype {
            DType::F32 | DType::I32 | DType::BF16 => true,
            DType::F16 => self.f16,
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
        let n0 = outs.first().map_or(0, |t| t.shape.numel());
        let s = |i: usize| &ins[i].shape;
        match op {
            Op::Embedding => {
                let (n, c, v) = (s(0).numel(), s(1).last(), s(1).dims()[0]);
                self.dispatch(
                    "embedding",
                    "forward",
                    &[u(n), u(c), u(v)],
                    &[
                        (1, Bind::T(ins[0])),
                        (2, Bind::T(ins[1])),
                        (3, Bind::T(outs[0])),
                    ],
                    groups_1d(n * c),
                )
            }
            Op::EmbeddingBackward { vocab } => {
                let (n, c) = (s(0).numel(), s(1).last());
                self.dispatch(
                    "embedding",
                    "backward",
                    &[u(n), u(c), u(*vocab)],
                    &[
                        (1, Bind::T(ins[0])),
                        (2, Bind::T(ins[1])),
                        (3, Bind::T(outs[0])),
                    ],
                    groups_1d(c),
                )
            }
            Op::MatMul { ta, tb } => {
                let (d, _) = matmul::dims(s(0), s(1), *ta, *tb)?;
                let (rsa, csa) = if *ta { (1, d.m) } else { (d.k, 1) };
                let (rsb, csb) = if *tb { (1, d.k) } else { (d.n, 1) };
                let ast = if d.a_shared { 0 } else { d.m * d.k };
                let bst = if d.b_shared { 0 } else { d.k * d.n };
                if d.batch > 65535 {
                    return Err(unsupported(format!(
                        "matmul batches of {} (at most 65535)",
                        d.batch
                    )));
                }
                let p = [
                    u(d.m),
                    u(d.n),
                    u(d.k),
                    u(rsa),
                    u(csa),
                    u(rsb),
                    u(csb),
                    u(ast),
                    u(bst),
                ];
                let g = (u(d.n.div_ceil(16)), u(d.m.div_ceil(16)), u(d.batch));
                self.dispatch(
                    "matmul",
                    "main",
                    &p,
                    &[
                        (1, Bind::T(ins[0])),
                        (2, Bind::T(ins[1])),
                        (3, Bind::T(outs[0])),
                    ],
                    g,
                )
            }
            Op::Add | Op::Mul => {
                let entry = if matches!(op, Op::Add) { "add" } else { "mul" };
                self.dispatch(
                    "elementwise",
                    entry,
                    &[u(n0), u(s(1).numel())],
                    &[
                        (1, Bind::T(ins[0])),
                        (2, Bind::T(ins[1])),
                        (3, Bind::T(outs[0])),
                    ],
                    groups_1d(n0),
                )
            }
            Op::Scale { factor } => self.dispatch(
                "elementwise",
                "scale",
                &[u(n0), 0, f(*factor)],
                &[(1, Bind::T(ins[0])), (3, Bind::T(outs[0]))],
                groups_1d(n0),
            ),
            Op::Gelu => self.dispatch(
                "elementwise",
                "gelu",
                &[u(n0)],
                &[(1, Bind::T(ins[0])), (3, Bind::T(outs[0]))],
                groups_1d(n0),
            ),
            Op::GeluBackward => self.dispatch(
                "elementwise",
                "gelu_backward",
                &[u(n0)],
                &[
                    (1, Bind::T(ins[0])),
                    (2, Bind::T(ins[1])),
                    (3, Bind::T(outs[0])),
                ],
                groups_1d(n0),
            ),
            Op::BiasGelu => {
                let b = [
                    (1, Bind::T(ins[0])),
                    (2, Bind::T(ins[1])),
                    (3, Bind::T(outs[0])),
                ];
                self.dispatch(
                    "elementwise",
                    "bias_gelu",
                    &[u(n0), u(s(1).numel())],
                    &b,
                    groups_1d(n0),
                )
            }
            Op::BiasGeluBackward => {
                let b = [
                    (1, Bind::T(ins[0])),
                    (2, Bind::T(ins[1])),
                    (4, Bind::T(ins[2])),
                    (3, Bind::T(outs[0])),
                ];
                self.dispatch(
                    "elementwise",
                    "bias_gelu_backward",
                    &[u(n0), u(s(1).numel())],
                    &b,
                    groups_1d(n0),
                )
            }
            Op::Fill { value, .. } => self.dispatch(
                "elementwise",
                "fill",
                &[u(n0), 0, f(*value)],
                &[(3, Bind::T(outs[0]))],
                groups_1d(n0),
            ),
            Op::Cast { to } => {
                let b = [(1, Bind::T(ins[0])), (3, Bind::T(outs[0]))];
                if ins[0].dtype == *to {
                    self.dispatch("elementwise", "copy", &[u(n0)], &b, groups_1d(n0))
                } else {
                    self.variant = Variant::Cast(ins[0].dtype, *to);
                    self.dispatch("cast", "main", &[u(n0)], &b, groups_1d(n0))
                }
            }
            Op::LayerNorm { eps } => {
                let (rows, c) = (s(0).rows(), s(0).last());
                let b: Vec<(u32, Bind)> = vec![
                    (1, Bind::T(ins[0])),
                    (2, Bind::T(ins[1])),
                    (3, Bind::T(ins[2])),
                    (4, Bind::T(outs[0])),
                    (5, Bind::T(outs[1])),
                    (6, Bind::T(outs[2])),
                ];
                self.dispatch(
                    "layernorm",
                    "forward",
                    &[u(rows), u(c), f(*eps)],
                    &b,
                    groups_1d(rows),
                )
            }
            Op::LayerNormBackward => {
                let (rows, c) = (s(1).rows(), s(1).last());
                let dx: Vec<(u32, Bind)> = (0..5)
                    .map(|i| (i as u32 + 1, Bind::T(ins[i])))
                    .chain([(6, Bind::T(outs[0]))])
                    .collect();
                self.dispatch(
                    "layernorm_backward",
                    "dx",
                    &[u(rows), u(c)],
                    &dx,
                    groups_1d(rows),
                )?;
                let dwdb = vec![
                    (1, Bind::T(ins[0])),
                    (2, Bind::T(ins[1])),
                    (4, Bind::T(ins[3])),
                    (5, Bind::T(ins[4])),
                    (6, Bind::T(outs[1])),
                    (7, Bind::T(outs[2])),
                ];
                self.dispatch(
                    "layernorm_backward",
                    "dwdb",
                    &[u(rows), u(c)],
                    &dwdb,
                    groups_1d(c),
                )
            }
            Op::Attention { n_head } | Op::AttentionBackward { n_head } => {
                let (b, t, c) = attention::btc(s(0), *n_head)?;
                let hd = c / n_head;
                if hd > 64 {
                    return Err(unsupported(format!(
                        "attention head size {hd} (at most 64)"
                    )));
                }
                let scale = 1.0 / (hd as f64).sqrt();
                let p = [u(b), u(t), u(c), u(*n_head), u(hd), f(scale)];
                let g = groups_1d(b * n_head * t);
                if matches!(op, Op::Attention { .. }) {
                    self.dispatch(
                        "attention",
                        "forward",
                        &p,
                        &[
                            (1, Bind::T(ins[0])),
                            (2, Bind::T(outs[0])),
                            (3, Bind::T(outs[1])),
                        ],
                        g,
                    )
                } else {
                    let binds: Vec<(u32, Bind)> = (0..4)
                        .map(|i| (i as u32 + 1, Bind::T(ins[i])))
                        .chain([(5, Bind::T(outs[0]))])
                        .collect();
                    self.dispatch("attention_backward", "dq", &p, &binds, g)?;
                    self.dispatch("attention_backward", "dkdv", &p, &binds, g)
                }
            }
            Op::Softmax => {
                let (rows, v) = (s(0).rows(), s(0).last());
                self.dispatch(
                    "softmax",
                    "forward",
                    &[u(rows), u(v)],
                    &[(1, Bind::T(ins[0])), (3, Bind::T(outs[0]))],
                    groups_1d(rows),
                )
            }
            Op::SoftmaxBackward => {
                let (rows, v) = (s(0).rows(), s(0).last());
                self.dispatch(
                    "softmax",
                    "backward",
                    &[u(rows), u(v)],
                    &[
                        (1, Bind::T(ins[0])),
                        (2, Bind::T(ins[1])),
                        (3, Bind::T(outs[0])),
                    ],
                    groups_1d(rows),
                )
            }
            Op::CrossEntropy => {
                let (rows, v) = (s(0).rows(), s(0).last());
                self.dispatch(
                    "cross_entropy",
                    "forward",
                    &[u(rows), u(v)],
                    &[
                        (1, Bind::T(ins[0])),
                        (2, Bind::T(ins[1])),
                        (5, Bind::T(outs[0])),
                    ],
                    (1, 1, 1),
                )
            }
            Op::CrossEntropyBackward => {
                let (rows, v) = (s(0).rows(), s(0).last());
                let b = vec![
                    (1, Bind::T(ins[0])),
                    (2, Bind::T(ins[1])),
                    (3, Bind::T(ins[2])),
                    (4, Bind::T(outs[0])),
                ];
                self.dispatch(
                    "cross_entropy",
                    "backward",
                    &[u(rows), u(v)],
                    &b,
                    groups_1d(rows),
                )
            }
            Op::Transpose { a, b } => {
                let (da, mid, db, inner) = transpose_view(s(0), *a, *b);
                let p = [u(n0), u(da), u(mid), u(db), u(inner)];
                self.dispatch(
                    "shape",
                    "transpose",
                    &p,
                    &[(1, Bind::T(ins[0])), (3, Bind::T(outs[0]))],
                    groups_1d(n0),
                )
            }
            Op::Split { axis, .. } => {
                let parts: Vec<&crate::tensor::Shape> = outs.iter().map(|o| &o.shape).collect();
                for (o, sl) in outs.iter().zip(slices(s(0), &parts, *axis)) {
                    let p = [u(sl.total), u(sl.width), u(sl.row), u(sl.offset)];
                    self.dispatch(
                        "shape",
                        "split_part",
                        &p,
                        &[(1, Bind::T(ins[0])), (3, Bind::T(o))],
                        groups_1d(sl.total),
                    )?;
                }
                Ok(())
            }
            Op::Concat { axis } => {
                let parts: Vec<&crate::tensor::Shape> = ins.iter().map(|i| &i.shape).collect();
                for (i, sl) in ins.iter().zip(slices(&outs[0].shape, &parts, *axis)) {
                    let p = [u(sl.total), u(sl.width), u(sl.row), u(sl.offset)];
                    self.dispatch(
                        "shape",
                        "concat_part",
                        &p,
                        &[(1, Bind::T(i)), (3, Bind::T(outs[0]))],
                        groups_1d(sl.total),
                    )?;
                }
                Ok(())
            }
            Op::Sum { axes } | Op::Mean { axes } | Op::Expand { axes, .. } => {
                let expand = matches!(op, Op::Expand { .. });
                let full = if expand { &outs[0].shape } else { s(0) };
                let r =
                    reduce_plan(full, axes, matches!(op, Op::Mean { .. })).ok_or_else(|| {
                        unsupported(format!(
                            "reductions over rank-{} tensors (at most 6)",
                            full.rank()
                        ))
                    })?;
                let mut p = vec![u(n0), u(r.rank)];
                p.extend(r.dims.iter().map(|&d| u(d)));
                p.push(r.mask);
                p.push(f(r.scale));
                let entry = if expand { "expand" } else { "sum" };
                self.dispatch(
                    "reduce",
                    entry,
                    &p,
                    &[(1, Bind::T(ins[0])), (3, Bind::T(outs[0]))],
                    groups_1d(n0),
                )
            }
            Op::Reshape { .. } => Err(Error::Internal("reshape reached a kernel".into())),
        }
    }

    fn write(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()> {
        // Kernels recorded earlier may still read this memory: submit them first,
        // since queue writes run before the next submission's commands.
        self.flush();
        let buffers = self
            .buffers
            .lock()
            .map_err(|_| Error::Internal("buffer table poisoned".into()))?;
        let buf = buffers
            .get(dst.block.handle)
            .ok_or_else(|| Error::Internal(format!("no buffer {}", dst.block.handle)))?;
        if data.len() % 4 == 0 {
            self.queue.write_buffer(buf, dst.block.offset, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().div_ceil(4) * 4, 0);
            self.queue.write_buffer(buf, dst.block.offset, &padded);
        }
        Ok(())
    }

    fn read(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        let buf = {
            let buffers = self
                .buffers
                .lock()
                .map_err(|_| Error::Internal("buffer table poisoned".into()))?;
            buffers
                .get(src.block.handle)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("no buffer {}", src.block.handle)))?
        };
        self.read_buffer(&buf, src.block.offset, src.byte_size())
    }

    fn accumulate(&mut self, dst: &TensorRef, src: &TensorRef) -> Result<()> {
        self.select("accumulate", &[dst, src])?;
        let n = dst.shape.numel();
        self.dispatch(
            "elementwise",
            "accumulate",
            &[u(n)],
            &[(1, Bind::T(src)), (3, Bind::T(dst))],
            groups_1d(n),
        )
    }

    fn sum_squares(&mut self, ts: &[&TensorRef]) -> Result<f64> {
        if ts.is_empty() {
            return Ok(0.0);
        }
        for t in ts {
            self.select("sum_squares", &[t])?;
        }
        // A few bytes of scratch outside the allocator: one f32 per tensor.
        let result = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sum of squares"),
            size: 4 * ts.len() as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        for (i, t) in ts.iter().enumerate() {
            self.variant = Variant::T(t.dtype);
            self.dispatch(
                "sum_squares",
                "main",
                &[u(t.shape.numel()), u(i)],
                &[(1, Bind::T(t)), (2, Bind::B(&result))],
                (1, 1, 1),
            )?;
        }
        let bytes = self.read_buffer(&result, 0, 4 * ts.len() as u64)?;
        let parts: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        Ok(parts.iter().map(|&x| x as f64).sum())
    }

    fn adamw(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        let (bc1, bc2) = s.bias_corrections();
        for slot in slots {
            for t in [slot.param, slot.grad, slot.m, slot.v] {
                if t.dtype != DType::F32 {
                    return Err(unsupported(format!(
                        "{} optimizer tensors (AdamW keeps f32)",
                        t.dtype
                    )));
                }
            }
            self.variant = Variant::T(DType::F32);
            let n = slot.param.shape.numel();
            let p = [
                u(n),
                f(s.lr),
                f(s.beta1),
                f(s.beta2),
                f(s.eps),
                f(s.decay_factor(slot.decay)),
                f(bc1),
                f(bc2),
                f(s.grad_scale),
            ];
            let b = vec![
                (1, Bind::T(slot.grad)),
                (2, Bind::T(slot.param)),
                (3, Bind::T(slot.m)),
                (4, Bind::T(slot.v)),
            ];
            self.dispatch("optim", "adamw", &p, &b, groups_1d(n))?;
        }
        Ok(())
    }
}
