//! The `Backend` trait: what a device must do to run a program. One folder per
//! backend; each implements the whole op list of `graph::ops`.

pub mod cpu;
pub mod cuda;
pub mod null;
pub mod profile;
pub mod wgpu;

use crate::error::{Error, Result};
use crate::graph::Op;
use crate::memory::timeline::Event;
use crate::memory::{
    Block, Budget, CachingAllocator, HostBuf, HostPool, MemoryStats, RawMemory, Tag,
};
use crate::tensor::{DType, HostTensor, Shape};

/// A non-owning view of a tensor in device memory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    /// The allocator block holding the elements; it may be larger than
    /// [`TensorRef::byte_size`] (see [`CachingAllocator::alloc`]).
    pub block: Block,
    /// The tensor's shape.
    pub shape: Shape,
    /// The element type as stored.
    pub dtype: DType,
}

impl TensorRef {
    /// Bytes the elements occupy: element count × dtype size.
    pub fn byte_size(&self) -> u64 {
        self.shape.byte_size(self.dtype)
    }
}

/// Hyper-parameters of one AdamW update, already resolved for this step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Learning rate of this step, the schedule already applied.
    pub lr: f64,
    /// Decay rate of the first-moment average `m`.
    pub beta1: f64,
    /// Decay rate of the second-moment average `v`.
    pub beta2: f64,
    /// Added to √v̂ in the update's denominator.
    pub eps: f64,
    /// Decoupled weight decay: a decayed parameter is multiplied by
    /// `1 − lr · weight_decay` before the Adam update.
    pub weight_decay: f64,
    /// 1-based step count, for bias correction.
    pub t: u64,
    /// Multiplies every gradient before use (gradient clipping, loss unscaling).
    pub grad_scale: f64,
}

impl AdamWStep {
    /// `(1 − β₁ᵗ, 1 − β₂ᵗ)`: what `m` and `v` are divided by to undo their
    /// zero start. Every backend takes them from here, so all round alike.
    pub fn bias_corrections(&self) -> (f64, f64) {
        let t = self.t as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }

    /// What a parameter is multiplied by before its Adam update: `1 − lr · wd`
    /// when it `decays`, else exactly 1 (biases and norms).
    pub fn decay_factor(&self, decays: bool) -> f64 {
        let wd = if decays { self.weight_decay } else { 0.0 };
        1.0 - self.lr * wd
    }
}

/// One parameter's tensors for the optimizer; all f32.
pub struct AdamWSlot<'a> {
    /// The master weights, updated in place.
    pub param: &'a TensorRef,
    /// The parameter's gradient, read only.
    pub grad: &'a TensorRef,
    /// The first moment, updated in place.
    pub m: &'a TensorRef,
    /// The second moment, updated in place.
    pub v: &'a TensorRef,
    /// Whether weight decay applies (matrices yes; biases, norms no).
    pub decay: bool,
    /// The parameter's low-precision copy that autocast's forward reads
    /// (f16/bf16), written from the updated weights with [`Op::Cast`]'s
    /// rounding, so the next step needs no cast of its own.
    pub shadow: Option<&'a TensorRef>,
}

impl AdamWSlot<'_> {
    /// [`Error::DType`] unless the parameter, its gradient and both moments are
    /// f32: AdamW updates f32 master weights whatever the activations' precision.
    pub fn check_f32(&self) -> Result<()> {
        for r in [self.param, self.grad, self.m, self.v] {
            if r.dtype != DType::F32 {
                return Err(Error::dtype(
                    "adamw",
                    "f32 master weights and state",
                    r.dtype,
                ));
            }
        }
        Ok(())
    }
}

/// One parameter's tensors for the 8-bit AdamW update
/// ([`crate::optim::quant`]): the moments are bytes with one f32 scale per
/// block of [`Q8_BLOCK`](crate::optim::quant::Q8_BLOCK) elements.
pub struct AdamWQ8Slot<'a> {
    /// The master weights `[n]` f32, updated in place.
    pub param: &'a TensorRef,
    /// The gradient `[n]` f32, read only.
    pub grad: &'a TensorRef,
    /// The first moment's codes `[n]` u8, rewritten.
    pub m: &'a TensorRef,
    /// The second moment's codes `[n]` u8, rewritten.
    pub v: &'a TensorRef,
    /// The blocks' scales `[2 · blocks(n)]` f32: `m`'s, then `v`'s; rewritten.
    pub scales: &'a TensorRef,
    /// Whether weight decay applies.
    pub decay: bool,
    /// As [`AdamWSlot::shadow`].
    pub shadow: Option<&'a TensorRef>,
}

impl AdamWQ8Slot<'_> {
    /// [`Error::DType`] / [`Error::Shape`] unless the slot's tensors have the
    /// dtypes and sizes the 8-bit update reads.
    pub fn check(&self) -> Result<()> {
        let n = self.param.shape.numel();
        let nb = crate::optim::quant::blocks(n);
        for (r, dt, len) in [
            (self.param, DType::F32, n),
            (self.grad, DType::F32, n),
            (self.m, DType::U8, n),
            (self.v, DType::U8, n),
            (self.scales, DType::F32, 2 * nb),
        ] {
            if r.dtype != dt {
                return Err(Error::dtype("adamw_q8", dt.name(), r.dtype));
            }
            if r.shape.numel() != len {
                return Err(Error::shape(
                    "adamw_q8",
                    format!(
                        "a tensor of {} elements where {len} are needed",
                        r.shape.numel()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What a device must do to run a program: run each op on tensors whose memory
/// the [`Device`]'s allocator handed out, copy bytes to and from the host, and
/// run the optimizer's own kernels. Ops never allocate their outputs: the executor
/// does, before calling [`Backend::run`].
pub trait Backend {
    /// The backend's name ("cpu", "cuda", "wgpu", "simulated"), as logs and
    /// memory traces show it.
    fn name(&self) -> &'static str;
    /// Whether the backend can store and compute tensors of `dtype`;
    /// [`Device::alloc`] refuses the others.
    fn supports(&self, dtype: DType) -> bool;
    /// The low-precision dtype this backend computes fastest in, if any
    /// (`Precision::Auto` picks it). The cpu backend stores f16/bf16 but computes
    /// in f32, so it prefers none.
    fn preferred_low_precision(&self) -> Option<DType> {
        None
    }
    /// Runs one op. Outputs are distinct blocks from inputs.
    fn run(&mut self, op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()>;
    /// Copies host bytes into `dst`: exactly [`TensorRef::byte_size`] bytes,
    /// in `dst`'s dtype.
    fn write(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()>;
    /// Copies `src` to the host: [`TensorRef::byte_size`] bytes, in its dtype.
    fn read(&mut self, src: &TensorRef) -> Result<Vec<u8>>;
    /// Device memory the backend's libraries need for themselves (cuBLAS's
    /// workspace). The trainer allocates it through the allocator, so the
    /// planner counts it and the budget covers it.
    fn workspace_bytes(&self) -> u64 {
        0
    }
    /// Hands the backend the workspace allocated for it.
    fn set_workspace(&mut self, _workspace: Option<&TensorRef>) -> Result<()> {
        Ok(())
    }
    /// `dst += src` elementwise (gradient accumulation across micro-batches).
    fn accumulate(&mut self, dst: &TensorRef, src: &TensorRef) -> Result<()>;
    /// Σ x² over all elements of all tensors, for global-norm clipping.
    fn sum_squares(&mut self, ts: &[&TensorRef]) -> Result<f64>;
    /// AdamW with decoupled weight decay, updating params and moments in place
    /// and writing each slot's `shadow` from its updated params.
    fn adamw(&mut self, slots: &[AdamWSlot], step: &AdamWStep) -> Result<()>;
    /// AdamW over 8-bit state: each block's moments decoded with `codebook`
    /// (`[CODEBOOK_LEN]` f32, [`crate::optim::quant::codebook`]), advanced and
    /// applied in f32, and encoded again under the block's new scales, as
    /// [`crate::optim::quant`]'s reference does.
    fn adamw_q8(
        &mut self,
        _slots: &[AdamWQ8Slot],
        _step: &AdamWStep,
        _codebook: &TensorRef,
    ) -> Result<()> {
        Err(Error::Unsupported {
            backend: self.name(),
            what: "8-bit optimizer state".into(),
            hint: "use --optimizer-state f32",
        })
    }
    /// Queues a timestamp after the work queued so far and returns its index
    /// among those since the last [`Backend::take_timestamps`], for profiles;
    /// `None` where the backend keeps no timer.
    fn timestamp(&mut self) -> Result<Option<usize>> {
        Ok(None)
    }
    /// The timestamps queued since the last call, in milliseconds from any
    /// fixed origin, after waiting for the work they follow.
    fn take_timestamps(&mut self) -> Result<Vec<f64>> {
        Ok(Vec::new())
    }
}

/// Backend names `--backend` accepts.
pub const BACKENDS: &[&str] = &["auto", "cpu", "cuda", "wgpu"];

/// A tensor that owns its device memory; give it back with [`Device::free`].
#[derive(Debug)]
pub struct DeviceTensor {
    r: TensorRef,
}

impl DeviceTensor {
    /// The tensor as a non-owning [`TensorRef`], to pass to ops and reads.
    pub fn view(&self) -> &TensorRef {
        &self.r
    }
    /// The tensor's shape.
    pub fn shape(&self) -> &Shape {
        &self.r.shape
    }
    /// The tensor's element type.
    pub fn dtype(&self) -> DType {
        self.r.dtype
    }
}

/// A backend with the allocator that owns its memory.
pub struct Device {
    backend: Box<dyn Backend>,
    memory: CachingAllocator<Box<dyn RawMemory>>,
    /// Host memory for offloaded tensors (see [`HostPool`]).
    host: HostPool,
    profile: Option<profile::Recorder>,
}

/// The host pool of a device whose tensors hold data.
fn host_pool() -> HostPool {
    HostPool::new(Box::new(cpu::CpuMemory::default()), true)
}

impl Device {
    /// The cpu backend over host memory, with no budget.
    pub fn cpu() -> Device {
        Self::cpu_wrapped(|raw| raw)
    }

    /// The cpu backend with its host memory wrapped, e.g. in a
    /// [`crate::memory::FaultyMemory`] that fails allocations on demand.
    pub fn cpu_wrapped<R: RawMemory + 'static>(wrap: impl FnOnce(cpu::CpuMemory) -> R) -> Device {
        let (backend, raw) = cpu::CpuBackend::new();
        Device {
            backend: Box::new(backend),
            memory: CachingAllocator::new(Box::new(wrap(raw))),
            host: host_pool(),
            profile: None,
        }
    }

    /// A device that stores nothing and computes nothing, with `capacity` bytes:
    /// programs run on it allocate exactly as on a real device.
    pub fn simulated(capacity: u64) -> Device {
        Device {
            backend: Box::new(null::NullBackend),
            memory: CachingAllocator::new(Box::new(crate::memory::SimMemory::new(capacity))),
            host: HostPool::new(Box::new(crate::memory::SimMemory::new(u64::MAX / 4)), false),
            profile: None,
        }
    }

    /// Whether this is a [`Device::simulated`] device, whose tensors hold no data.
    pub fn is_simulated(&self) -> bool {
        self.backend.name() == "simulated"
    }

    /// The cuda backend on GPU 0; a typed error when there is no usable driver.
    pub fn cuda() -> Result<Device> {
        let (backend, raw) = cuda::CudaBackend::open(0)?;
        Ok(Device {
            backend: Box::new(backend),
            memory: CachingAllocator::new(Box::new(raw)),
            host: host_pool(),
            profile: None,
        })
    }

    /// The wgpu backend on the best adapter, a CPU-type one (lavapipe) included.
    pub fn wgpu() -> Result<Device> {
        Self::wgpu_adapter(true)?.ok_or_else(|| Error::Unsupported {
            backend: "wgpu",
            what: "this machine: wgpu found no adapter".into(),
            hint: "install a Vulkan driver (for CPUs: apt-get install mesa-vulkan-drivers) or use the cpu backend (Device::by_name)",
        })
    }

    fn wgpu_adapter(allow_cpu: bool) -> Result<Option<Device>> {
        Ok(
            wgpu::WgpuBackend::open(allow_cpu)?.map(|(backend, raw)| Device {
                backend: Box::new(backend),
                memory: CachingAllocator::new(Box::new(raw)),
                host: host_pool(),
                profile: None,
            }),
        )
    }

    /// The backend named `name` ("cpu", "wgpu", or "auto" for the best available).
    pub fn by_name(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::cpu()),
            "wgpu" => Device::wgpu(),
            "cuda" => Device::cuda(),
            "auto" => Device::best(),
            _ => Err(Error::UnknownBackend {
                name: name.to_string(),
                known: BACKENDS.join(", "),
            }),
        }
    }

    /// The fastest device available: cuda, else a real GPU through wgpu, else the cpu
    /// backend (a CPU-type wgpu adapter such as lavapipe only when asked for by
    /// name: it is slower than the cpu backend).
    pub fn best() -> Result<Device> {
        if cuda::available() {
            match Device::cuda() {
                Ok(d) => return Ok(d),
                Err(e) => log::warn!("cuda unusable ({e}); trying wgpu"),
            }
        }
        match Self::wgpu_adapter(false) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Ok(Device::cpu()),
            Err(e) => {
                log::warn!("wgpu unusable ({e}); using the cpu backend");
                Ok(Device::cpu())
            }
        }
    }

    /// The backend's name (see [`Backend::name`]).
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// Whether the backend can hold tensors of `dtype` (see [`Backend::supports`]).
    pub fn supports(&self, dtype: DType) -> bool {
        self.backend.supports(dtype)
    }

    /// The low-precision dtype the backend computes fastest in, if any (see
    /// [`Backend::preferred_low_precision`]).
    pub fn preferred_low_precision(&self) -> Option<DType> {
        self.backend.preferred_low_precision()
    }

    /// Bytes of library workspace the backend asks for (see `Backend::workspace_bytes`).
    pub fn workspace_bytes(&self) -> u64 {
        self.backend.workspace_bytes()
    }

    /// A tensor of `shape` and `dtype` from the allocator, its contents
    /// unspecified. Fails with [`Error::Unsupported`] for a dtype the backend
    /// cannot hold, and with [`Error::OutOfMemory`] when the allocator cannot
    /// serve it within the budget and the device.
    pub fn alloc(&mut self, shape: Shape, dtype: DType) -> Result<DeviceTensor> {
        if !self.backend.supports(dtype) {
            return Err(Error::Unsupported {
                backend: self.backend.name(),
                what: format!("{dtype} tensors"),
                hint: "use another TrainConfig::precision or the cpu backend",
            });
        }
        let block = self.memory.alloc(shape.byte_size(dtype))?;
        Ok(DeviceTensor {
            r: TensorRef {
                block,
                shape,
                dtype,
            },
        })
    }

    /// Gives the tensor's block back to the allocator's cache.
    pub fn free(&mut self, t: DeviceTensor) {
        self.memory.free(t.r.block)
    }

    /// A new device tensor holding a copy of `h`; if the copy fails, the block
    /// is freed before the error is returned.
    pub fn upload(&mut self, h: &HostTensor) -> Result<DeviceTensor> {
        let t = self.alloc(h.shape.clone(), h.dtype)?;
        if let Err(e) = self.backend.write(&t.r, &h.data) {
            self.free(t);
            return Err(e);
        }
        Ok(t)
    }

    /// Overwrites `t` with `h`; a shape error when their shapes or dtypes differ.
    pub fn write(&mut self, t: &DeviceTensor, h: &HostTensor) -> Result<()> {
        if t.r.shape != h.shape || t.r.dtype != h.dtype {
            return Err(Error::shape(
                "write",
                format!(
                    "host {} {} into device {} {}",
                    h.shape, h.dtype, t.r.shape, t.r.dtype
                ),
            ));
        }
        self.backend.write(&t.r, &h.data)
    }

    /// Copies a device tensor into a new host tensor of the same shape and dtype.
    pub fn download(&mut self, t: &TensorRef) -> Result<HostTensor> {
        Ok(HostTensor {
            shape: t.shape.clone(),
            dtype: t.dtype,
            data: self.backend.read(t)?,
        })
    }

    /// The allocator's counters as they are now.
    pub fn memory_stats(&self) -> MemoryStats {
        self.memory.stats()
    }

    /// Total memory of the device, in bytes.
    pub fn total_memory(&self) -> u64 {
        self.memory.raw().total_bytes()
    }

    /// Memory the device could still hand out, in bytes.
    pub fn free_memory(&self) -> u64 {
        self.memory.raw().free_bytes()
    }

    /// Caps the memory this device may reserve; returns the cap in bytes (a
    /// percentage is of the device's total memory).
    pub fn set_budget(&mut self, budget: Option<Budget>) -> u64 {
        let total = self.total_memory();
        let bytes = budget.map(|b| b.resolve(total));
        self.memory.set_budget(bytes);
        bytes.unwrap_or(total)
    }

    /// The cap on reserved bytes; `None` when there is none.
    pub fn budget_bytes(&self) -> Option<u64> {
        self.memory.budget()
    }

    /// Returns cached, unused segments to the device and the host.
    pub fn empty_cache(&mut self) {
        self.memory.empty_cache();
        self.host.empty_cache()
    }

    /// Starts a new high-water mark in both pools (see
    /// [`CachingAllocator::reset_peak_stats`]).
    pub fn reset_peak_stats(&mut self) {
        self.memory.reset_peak_stats();
        self.host.reset_peak_stats()
    }

    /// Fault injection for tests: the `n`-th allocation from now fails with
    /// `OutOfMemory`.
    pub fn fail_allocation_in(&mut self, n: u64) {
        self.memory.fail_allocation_in(n)
    }

    /// Tags the allocations that follow (in both pools), for the memory timeline.
    pub fn set_tag(&mut self, tag: Tag) {
        self.memory.set_tag(tag);
        self.host.set_tag(tag)
    }

    /// A tensor's worth of bytes in the host pool, zeroed.
    pub fn host_alloc(&mut self, shape: Shape, dtype: DType) -> Result<HostBuf> {
        self.host.alloc(shape, dtype)
    }

    /// Gives host-pool bytes back.
    pub fn host_free(&mut self, h: HostBuf) {
        self.host.free(h)
    }

    /// The host pool itself (counters, budget, bytes).
    pub fn host(&mut self) -> &mut HostPool {
        &mut self.host
    }

    /// The host pool's counters.
    pub fn host_stats(&self) -> MemoryStats {
        self.host.stats()
    }

    /// Copies elements `[from, from + n)` of `src` in the host pool into
    /// `dst` (`n` elements of the same dtype). Nothing moves on a simulated
    /// device.
    pub fn copy_in(&mut self, src: &HostBuf, from: usize, dst: &TensorRef) -> Result<()> {
        let w = src.dtype.size_in_bytes();
        let n = dst.byte_size() as usize;
        match self.host.bytes(src) {
            Some(b) => self.backend.write(dst, &b[from * w..from * w + n]),
            None => Ok(()),
        }
    }

    /// Copies `src` into elements `[from, ..)` of `dst` in the host pool.
    pub fn copy_out(&mut self, src: &TensorRef, dst: &HostBuf, from: usize) -> Result<()> {
        if self.host.bytes(dst).is_none() {
            return Ok(());
        }
        let data = self.backend.read(src)?;
        let w = dst.dtype.size_in_bytes();
        let b = self.host.bytes_mut(dst).expect("checked real above");
        b[from * w..from * w + data.len()].copy_from_slice(&data);
        Ok(())
    }

    /// Sets the training step recorded in the memory events that follow.
    pub fn set_step(&mut self, step: u64) {
        self.memory.set_step(step)
    }

    /// Starts recording every allocator event, for the memory timeline.
    pub fn start_trace(&mut self) {
        self.memory.start_trace()
    }

    /// Stops recording and returns the events since [`Device::start_trace`];
    /// `None` when no trace was being recorded.
    pub fn take_trace(&mut self) -> Option<Vec<Event>> {
        self.memory.take_trace()
    }

    /// Takes ownership of a block the executor allocated.
    pub(crate) fn adopt(&mut self, r: TensorRef) -> DeviceTensor {
        DeviceTensor { r }
    }

    /// The backend itself, to run its kernels on tensors of this device
    /// (parity tests of the optimizer's kernels do).
    pub fn backend_mut(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    pub(crate) fn alloc_block(&mut self, bytes: u64) -> Result<Block> {
        self.memory.alloc(bytes)
    }

    pub(crate) fn free_block(&mut self, b: Block) {
        self.memory.free(b)
    }
}
