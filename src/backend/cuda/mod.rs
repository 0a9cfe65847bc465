//! The cuda backend: kernels in `kernels/*.cu` compiled at first use by NVRTC to
//! CUBIN for the device's own architecture, GEMMs through cuBLAS (f32, and
//! f16/bf16 with f32 accumulation on tensor cores), memory through plain
//! `cuMemAlloc`/`cuMemFree` under the caching allocator (not the stream-ordered
//! pool), so reserved bytes are the truth.
//!
//! cudarc loads every CUDA library at run time: this builds anywhere, and a
//! machine without a driver gets a typed error, never a panic.
//!
//! Status: the kernels compile (tested in CI for sm_80 and sm_90); this host code
//! has not yet run on a GPU in this repository's history (see the README).

pub mod compile;

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{
    result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::{AdamWSlot, AdamWStep, Backend, TensorRef};
use crate::error::{Error, Result};
use crate::graph::ops::reduce::reduce_plan;
use crate::graph::ops::shape::{slices, transpose_view};
use crate::graph::ops::{attention, matmul, Op};
use crate::memory::{DeviceOutOfMemory, RawMemory, Segment};
use crate::tensor::DType;

/// Shapes up to rank 6, passed by value to the reduction kernels.
#[repr(C)]
#[derive(Clone, Copy)]
struct Dims6 {
    d: [u64; 6],
}
// SAFETY: plain old data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for Dims6 {}

fn unavailable(what: impl Into<String>) -> Error {
    Error::Unsupported {
        backend: "cuda",
        what: what.into(),
        hint: "install an NVIDIA driver (and CUDA's NVRTC and cuBLAS libraries), or use the wgpu or cpu backend (Device::by_name)",
    }
}

fn drv_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Kernel {
        op: "cuda",
        detail: format!("{what}: {e:?}"),
    }
}

/// Whether the CUDA driver, NVRTC and cuBLAS can all be loaded.
pub fn available() -> bool {
    // SAFETY: these only try to dlopen the libraries by name.
    unsafe {
        drv_sys::is_culib_present()
            && cudarc::nvrtc::sys::is_culib_present()
            && blas_sys::is_culib_present()
    }
}

/// Device memory through cuMemAlloc / cuMemFree.
pub struct CudaMemory {
    ctx: Arc<CudaContext>,
}

impl RawMemory for CudaMemory {
    fn alloc(&mut self, bytes: u64) -> Result<Segment, DeviceOutOfMemory> {
        let oom = DeviceOutOfMemory { requested: bytes };
        self.ctx.bind_to_thread().map_err(|_| oom)?;
        // SAFETY: a plain allocation; freed in `free`.
        let ptr = unsafe { drv::malloc_sync(bytes.max(1) as usize) }.map_err(|_| oom)?;
        Ok(Segment { handle: ptr, bytes })
    }
    fn free(&mut self, seg: Segment) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: the pointer came from malloc_sync and is freed once.
            let _ = unsafe { drv::free_sync(seg.handle) };
        }
    }
    fn total_bytes(&self) -> u64 {
        let _ = self.ctx.bind_to_thread();
        drv::mem_get_info().map_or(0, |(_, t)| t as u64)
    }
    fn free_bytes(&self) -> u64 {
        let _ = self.ctx.bind_to_thread();
        drv::mem_get_info().map_or(0, |(f, _)| f as u64)
    }
}

/// The cuda backend on one GPU: a context, its default stream, a cuBLAS handle,
/// and the kernels compiled so far for the device's architecture.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: blas_sys::cublasHandle_t,
    arch: String,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: HashMap<String, CudaFunction>,
    /// Small buffers outside the allocator: per-row losses, attention's row
    /// statistics, reduction partials.
    workspace: Option<(u64, u64)>,
    /// The AdamW parameter table (48 bytes a parameter), outside the allocator.
    slots: Option<(u64, u64)>,
    /// The GPU's name as the driver reports it (`GPU <ordinal>` if it cannot).
    pub device_name: String,
    /// Set when kernels/attention_tc.cu failed to compile (no crt/mma.h):
    /// attention stays on attention.cu from then on.
    tc_attention_broken: bool,
}

fn suffix(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => return Err(unavailable(format!("{other} tensors"))),
    })
}

fn ptr(t: &TensorRef) -> u64 {
    t.block.handle + t.block.offset
}

fn grid(n: usize, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u64).div_ceil(block as u64).max(1) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Chunks a column reduction (`outputs` sums of `count` elements each) is split
/// into for its first stage, the chunks then added in order: enough threads to
/// fill a GPU (about 64 K), at least 128 elements a chunk, at most 64 chunks.
pub fn column_chunks(outputs: u64, count: u64) -> u64 {
    (count / 128)
        .clamp(1, 64)
        .min((65536 / outputs.max(1)).max(1))
}

/// Row ranges the embedding backward splits a table of `vocab` rows into, one
/// thread per (column, range): at most 64, at least 2 rows each.
pub fn embedding_ranges(vocab: u64) -> u64 {
    vocab.div_ceil(2).clamp(1, 64)
}

fn rows(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal`; a typed error when there is no usable driver.
    pub fn open(ordinal: usize) -> Result<(CudaBackend, CudaMemory)> {
        if !available() {
            return Err(unavailable(
                "this machine: no CUDA driver, NVRTC or cuBLAS library was found",
            ));
        }
        let ctx =
            CudaContext::new(ordinal).map_err(|e| unavailable(format!("GPU {ordinal} ({e:?})")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| drv_err("compute capability", e))?;
        let stream = ctx.default_stream();
        let blas = blas::create_handle().map_err(|e| drv_err("cublas", e))?;
        // SAFETY: the handle and stream are live; the stream outlives the handle's use.
        unsafe { blas::set_stream(blas, stream.cu_stream() as blas_sys::cudaStream_t) }
            .map_err(|e| drv_err("cublas stream", e))?;
        let name = ctx.name().unwrap_or_else(|_| format!("GPU {ordinal}"));
        log::info!("cuda device: {name} (sm_{major}{minor})");
        let mem = CudaMemory { ctx: ctx.clone() };
        Ok((
            CudaBackend {
                ctx,
                stream,
                blas,
                arch: format!("sm_{major}{minor}"),
                modules: HashMap::new(),
                functions: HashMap::new(),
                workspace: None,
                slots: None,
                device_name: name,
                tc_attention_broken: false,
            },
            mem,
        ))
    }

    fn function(&mut self, file: &'static str, name: String) -> Result<CudaFunction> {
        if let Some(f) = self.functions.get(&name) {
            return Ok(f.clone());
        }
        if !self.modules.contains_key(file) {
            let cubin = compile::compile(file, &self.arch)?;
            let m = self
                .ctx
                .load_module(Ptx::from_binary(cubin))
                .map_err(|e| drv_err(&format!("loading kernels/{file}.cu"), e))?;
            self.modules.insert(file, m);
        }
        let f = self.modules[file]
            .load_function(&name)
            .map_err(|e| drv_err(&format!("kernel {name}"), e))?;
        self.functions.insert(name, f.clone());
        Ok(f)
    }

    /// Whether attention of head size `hd` in `dtype` runs on tensor cores
    /// (kernels/attention_tc.cu): f16/bf16, head sizes 16–64 in steps of 16,
    /// sm_80 or later. HEADROOM_ATTENTION=cuda-cores forces attention.cu, to
    /// compare the two on a GPU.
    fn tensor_core_attention(&self, dtype: DType, hd: usize) -> bool {
        let sm: u32 = self.arch.trim_start_matches("sm_").parse().unwrap_or(0);
        let forced_off = std::env::var("HEADROOM_ATTENTION").is_ok_and(|v| v == "cuda-cores");
        !forced_off
            && !self.tc_attention_broken
            && sm >= 80
            && matches!(dtype, DType::F16 | DType::BF16)
            && hd % 16 == 0
            && hd <= 64
    }

    /// A device buffer of at least `bytes` for intermediate sums.
    fn workspace(&mut self, bytes: u64) -> Result<u64> {
        let mut slot = self.workspace.take();
        let r = self.side_buffer(&mut slot, bytes);
        self.workspace = slot;
        r
    }

    /// Copies a launch's table (AdamW slots, Σx² slots) to a device buffer kept
    /// outside the allocator, grown as needed; returns its address.
    fn upload_table(&mut self, table: &[u8]) -> Result<u64> {
        let mut slot = self.slots.take();
        let r = self.side_buffer(&mut slot, table.len() as u64);
        self.slots = slot;
        let dev_table = r?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("context", e))?;
        // SAFETY: the buffer holds table.len() bytes; the copy is ordered after
        // earlier work on the default stream.
        unsafe { drv::memcpy_htod_sync(dev_table, table) }.map_err(|e| drv_err("upload", e))?;
        Ok(dev_table)
    }

    /// Grows a small buffer kept outside the allocator (a few KiB): the old one
    /// is freed once no kernel can still be using it.
    fn side_buffer(&mut self, slot: &mut Option<(u64, u64)>, bytes: u64) -> Result<u64> {
        if let Some((p, n)) = *slot {
            if n >= bytes {
                return Ok(p);
            }
            self.stream.synchronize().map_err(|e| drv_err("sync", e))?;
            // SAFETY: allocated by this backend; no kernel in flight after the sync.
            let _ = unsafe { drv::free_sync(p) };
            *slot = None;
        }
        // SAFETY: a plain allocation, kept for the backend's life.
        let p =
            unsafe { drv::malloc_sync(bytes as usize) }.map_err(|e| drv_err("side buffer", e))?;
        *slot = Some((p, bytes));
        Ok(p)
    }

    /// `c = op(a) @ op(b)` (row-major) as cuBLAS's column-major `cᵀ = op(b)ᵀ op(a)ᵀ`.
    fn gemm(
        &mut self,
        a: &TensorRef,
        b: &TensorRef,
        c: &TensorRef,
        ta: bool,
        tb: bool,
    ) -> Result<()> {
        let (d, _) = matmul::dims(&a.shape, &b.shape, ta, tb)?;
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        // A shared weight under a batched, untransposed `a` is one taller GEMM.
        let (m, batch) = if d.b_shared && !ta && !d.a_shared {
            (d.m * d.batch, 1)
        } else {
            (d.m, d.batch)
        };
        let (n, k) = (d.n, d.k);
        let lda = if tb { k } else { n }; // of b, cuBLAS's first operand
        let ldb = if ta { m } else { k }; // of a
        let sa = if d.b_shared { 0 } else { (k * n) as i64 };
        let sb = if d.a_shared || batch == 1 {
            0
        } else {
            (m * k) as i64
        };
        let sc = (m * n) as i64;
        let dt = match a.dtype {
            DType::F32 => blas_sys::cudaDataType_t::CUDA_R_32F,
            DType::F16 => blas_sys::cudaDataType_t::CUDA_R_16F,
            DType::BF16 => blas_sys::cudaDataType_t::CUDA_R_16BF,
            other => return Err(unavailable(format!("{other} matmul"))),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: pointers are live device blocks sized by the shape rule; the
        // handle runs on the backend's stream.
        unsafe {
            blas::gemm_strided_batched_ex(
                self.blas,
                op(tb),
                op(ta),
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const _,
                ptr(b) as *const _,
                dt,
                lda as i32,
                sa,
                ptr(a) as *const _,
                dt,
                ldb as i32,
                sb,
                &beta as *const f32 as *const _,
                ptr(c) as *mut _,
                dt,
                n as i32,
                sc,
                batch as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| drv_err("cublas gemm", e))
    }
}

/// One kernel argument, kept alive until the launch has read it.
enum KArg {
    U64(u64),
    U32(u32),
    F32(f32),
    Dims(Dims6),
}

impl From<u64> for KArg {
    fn from(x: u64) -> Self {
        KArg::U64(x)
    }
}
impl From<u32> for KArg {
    fn from(x: u32) -> Self {
        KArg::U32(x)
    }
}
impl From<f32> for KArg {
    fn from(x: f32) -> Self {
        KArg::F32(x)
    }
}
impl From<Dims6> for KArg {
    fn from(x: Dims6) -> Self {
        KArg::Dims(x)
    }
}

/// Launches `$f` with the given arguments, in the kernel's order and types.
macro_rules! launch {
    ($self:ident, $f:expr, $cfg:expr, $($arg:expr),* $(,)?) => {{
        let f = $f;
        let args: Vec<KArg> = vec![$(KArg::from($arg)),*];
        let mut b = $self.stream.launch_builder(&f);
        for a in &args {
            match a {
                KArg::U64(x) => b.arg(x),
                KArg::U32(x) => b.arg(x),
                KArg::F32(x) => b.arg(x),
                KArg::Dims(x) => b.arg(x),
            };
        }
        // SAFETY: argument types and order match the kernel's signature.
        unsafe { b.launch($cfg) }.map(|_| ()).map_err(|e| drv_err("launch", e))
    }};
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn supports(&self, dtype: DType) -> bool {
        !matches!(dtype, DType::F64)
    }

    /// cuBLAS's recommended workspace: 32 MiB on Hopper, 4 MiB before.
    fn workspace_bytes(&self) -> u64 {
        let sm: u32 = self.arch.trim_start_matches("sm_").parse().unwrap_or(0);
        if sm >= 90 {
            32 << 20
        } else {
            4 << 20
        }
    }

    fn set_workspace(&mut self, w: Option<&TensorRef>) -> Result<()> {
        let (p, n) = w.map_or((0, 0), |t| (ptr(t), t.byte_size() as usize));
        // SAFETY: the block stays allocated for the trainer's life; cuBLAS only
        // uses it inside calls on this handle.
        let st = unsafe { blas_sys::cublasSetWorkspace_v2(self.blas, p as *mut _, n) };
        if st != blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(drv_err("cublas workspace", st));
        }
        Ok(())
    }

    fn preferred_low_precision(&self) -> Option<DType> {
        // bf16 tensor cores from Ampere (sm_80) on; f16 before.
        let sm: u32 = self.arch.trim_start_matches("sm_").parse().unwrap_or(0);
        Some(if sm >= 80 { DType::BF16 } else { DType::F16 })
    }

    fn run(&mut self, op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("context", e))?;
        let n0 = outs.first().map_or(0, |t| t.shape.numel()) as u64;
        // The storage type of the op: its first float operand's.
        let dt = ins
            .iter()
            .chain(outs)
            .map(|t| t.dtype)
            .find(|d| d.is_float())
            .unwrap_or(DType::F32);
        let sfx = suffix(dt)?;
        let k = |name: &str| format!("{name}_{sfx}");
        let s = |i: usize| &ins[i].shape;
        match op {
            Op::MatMul { ta, tb } => self.gemm(ins[0], ins[1], outs[0], *ta, *tb),
            Op::Add | Op::Mul => {
                let f = self.function(
                    "elementwise",
                    k(if matches!(op, Op::Add) { "add" } else { "mul" }),
                )?;
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(outs[0]),
                    n0,
                    s(1).numel() as u64
                )
            }
            Op::Scale { factor } => {
                let f = self.function("elementwise", k("scale"))?;
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(ins[0]),
                    ptr(outs[0]),
                    n0,
                    *factor as f32
                )
            }
            Op::Fill { value, .. } => {
                let f = self.function("elementwise", k("fill"))?;
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(outs[0]),
                    n0,
                    *value as f32
                )
            }
            Op::Gelu => {
                let f = self.function("elementwise", k("gelu_forward"))?;
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(ins[0]),
                    ptr(outs[0]),
                    n0
                )
            }
            Op::GeluBackward => {
                let f = self.function("elementwise", k("gelu_backward"))?;
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(outs[0]),
                    n0
                )
            }
            Op::BiasGelu => {
                let f = self.function("elementwise", k("bias_gelu_forward"))?;
                let nb = s(1).numel() as u64;
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(outs[0]),
                    n0,
                    nb
                )
            }
            Op::BiasGeluBackward => {
                let f = self.function("elementwise", k("bias_gelu_backward"))?;
                let nb = s(1).numel() as u64;
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(ins[2]),
                    ptr(outs[0]),
                    n0,
                    nb
                )
            }
            Op::Cast { to } => {
                let name = format!("cast_{}_{}", suffix(ins[0].dtype)?, suffix(*to)?);
                let f = self.function("cast", name)?;
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(ins[0]),
                    ptr(outs[0]),
                    n0
                )
            }
            Op::Embedding => {
                let (n, c, v) = (
                    s(0).numel() as u64,
                    s(1).last() as u64,
                    s(1).dims()[0] as u64,
                );
                let f = self.function("embedding", k("embedding_forward"))?;
                launch!(
                    self,
                    f,
                    grid((n * c) as usize, 256),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(outs[0]),
                    n,
                    c,
                    v
                )
            }
            Op::EmbeddingBackward { vocab } => {
                let (n, c) = (s(0).numel() as u64, s(1).last() as u64);
                let ranges = embedding_ranges(*vocab as u64);
                let f = self.function("embedding", k("embedding_backward"))?;
                launch!(
                    self,
                    f,
                    grid((c * ranges) as usize, 256),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(outs[0]),
                    n,
                    c,
                    *vocab as u64,
                    ranges
                )
            }
            Op::LayerNorm { eps } => {
                let (r, c) = (s(0).rows(), s(0).last() as u64);
                let f = self.function("layernorm", k("layernorm_forward"))?;
                launch!(
                    self,
                    f,
                    rows(r),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(ins[2]),
                    ptr(outs[0]),
                    ptr(outs[1]),
                    ptr(outs[2]),
                    c,
                    *eps as f32
                )
            }
            Op::LayerNormBackward => {
                let (r, c) = (s(1).rows(), s(1).last() as u64);
                let f = self.function("layernorm", k("layernorm_backward_dx"))?;
                launch!(
                    self,
                    f,
                    rows(r),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(ins[2]),
                    ptr(ins[3]),
                    ptr(ins[4]),
                    ptr(outs[0]),
                    c
                )?;
                let chunks = column_chunks(c, r as u64);
                let partial = self.workspace(4 * 2 * c * chunks)?;
                let f = self.function("layernorm", k("layernorm_backward_dwdb"))?;
                launch!(
                    self,
                    f,
                    grid((c * chunks) as usize, 256),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(ins[3]),
                    ptr(ins[4]),
                    partial,
                    r as u64,
                    c,
                    chunks
                )?;
                let f = self.function("layernorm", k("layernorm_backward_dwdb_finish"))?;
                launch!(
                    self,
                    f,
                    grid(c as usize, 256),
                    partial,
                    ptr(outs[1]),
                    ptr(outs[2]),
                    c,
                    chunks
                )
            }
            Op::Softmax => {
                let f = self.function("softmax", k("softmax_forward"))?;
                launch!(
                    self,
                    f,
                    rows(s(0).rows()),
                    ptr(ins[0]),
                    ptr(outs[0]),
                    s(0).last() as u64
                )
            }
            Op::SoftmaxBackward => {
                let f = self.function("softmax", k("softmax_backward"))?;
                launch!(
                    self,
                    f,
                    rows(s(0).rows()),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(outs[0]),
                    s(0).last() as u64
                )
            }
            Op::CrossEntropy => {
                let (r, v) = (s(0).rows(), s(0).last() as u64);
                let ws = self.workspace(4 * r as u64)?;
                let f = self.function("cross_entropy", k("cross_entropy_rows"))?;
                launch!(self, f, rows(r), ptr(ins[0]), ptr(ins[1]), ws, v)?;
                let f = self.function("cross_entropy", k("cross_entropy_mean"))?;
                launch!(self, f, rows(1), ws, ptr(outs[0]), r as u64)
            }
            Op::CrossEntropyBackward => {
                let (r, v) = (s(0).rows(), s(0).last() as u64);
                let f = self.function("cross_entropy", k("cross_entropy_backward"))?;
                launch!(
                    self,
                    f,
                    rows(r),
                    ptr(ins[0]),
                    ptr(ins[1]),
                    ptr(ins[2]),
                    ptr(outs[0]),
                    r as u64,
                    v
                )
            }
            Op::Attention { n_head } | Op::AttentionBackward { n_head } => {
                let (b, t, c) = attention::btc(s(0), *n_head)?;
                let hd = c / n_head;
                if hd > 128 || hd % 4 != 0 {
                    return Err(unavailable(format!(
                        "attention head size {hd} (a multiple of 4, at most 128)"
                    )));
                }
                let scale = 1.0 / (hd as f32).sqrt();
                let mut tc = self.tensor_core_attention(ins[0].dtype, hd);
                if tc {
                    // The file needs CUDA's crt/mma.h; without it (a bare pip
                    // install), attention.cu still works.
                    if let Err(e) = self.function("attention_tc", k("attention_tc_forward")) {
                        log::warn!("tensor-core attention unavailable, using attention.cu: {e}");
                        self.tc_attention_broken = true;
                        tc = false;
                    }
                }
                // Tensor cores: 128 threads per 32 rows; else 256 per 64 rows,
                // of one (batch, head).
                let (file, pre, rows_per, threads) = if tc {
                    ("attention_tc", "attention_tc_", 32, 128)
                } else {
                    ("attention", "attention_", 64, 256)
                };
                let tiles = LaunchConfig {
                    grid_dim: (t.div_ceil(rows_per) as u32, *n_head as u32, b as u32),
                    block_dim: (threads, 1, 1),
                    shared_mem_bytes: 0,
                };
                let (b, t, c, nh) = (b as u64, t as u64, c as u64, *n_head as u64);
                if matches!(op, Op::Attention { .. }) {
                    let f = self.function(file, k(&format!("{pre}forward")))?;
                    launch!(
                        self,
                        f,
                        tiles,
                        ptr(ins[0]),
                        ptr(outs[0]),
                        ptr(outs[1]),
                        t,
                        c,
                        nh,
                        scale
                    )
                } else {
                    // ins: qkv, out, lse, dout. Σ dout·out per row goes to the
                    // side buffer first; dq and dk/dv then write disjoint columns.
                    let delta = self.workspace(4 * b * nh * t)?;
                    let f = self.function("attention", k("attention_backward_delta"))?;
                    let rows_cfg = grid((b * nh * t) as usize, 256);
                    launch!(
                        self,
                        f,
                        rows_cfg,
                        ptr(ins[1]),
                        ptr(ins[3]),
                        delta,
                        b,
                        t,
                        c,
                        nh
                    )?;
                    for entry in ["backward_dq", "backward_dkdv"] {
                        let f = self.function(file, k(&format!("{pre}{entry}")))?;
                        launch!(
                            self,
                            f,
                            tiles,
                            ptr(ins[0]),
                            ptr(ins[2]),
                            delta,
                            ptr(ins[3]),
                            ptr(outs[0]),
                            t,
                            c,
                            nh,
                            scale
                        )?;
                    }
                    Ok(())
                }
            }
            Op::Transpose { a, b } => {
                let (da, mid, db, inner) = transpose_view(s(0), *a, *b);
                let f = self.function("shape", k("transpose"))?;
                let (da, mid, db, inner) = (da as u64, mid as u64, db as u64, inner as u64);
                launch!(
                    self,
                    f,
                    grid(n0 as usize, 256),
                    ptr(ins[0]),
                    ptr(outs[0]),
                    n0,
                    da,
                    mid,
                    db,
                    inner
                )
            }
            Op::Split { axis, .. } => {
                let parts: Vec<&crate::tensor::Shape> = outs.iter().map(|o| &o.shape).collect();
                for (o, sl) in outs.iter().zip(slices(s(0), &parts, *axis)) {
                    let f = self.function("shape", k("split_part"))?;
                    let (n, w, row, off) = (
                        sl.total as u64,
                        sl.width as u64,
                        sl.row as u64,
                        sl.offset as u64,
                    );
                    launch!(
                        self,
                        f,
                        grid(sl.total, 256),
                        ptr(ins[0]),
                        ptr(o),
                        n,
                        w,
                        row,
                        off
                    )?;
                }
                Ok(())
            }
            Op::Concat { axis } => {
                let parts: Vec<&crate::tensor::Shape> = ins.iter().map(|i| &i.shape).collect();
                for (i, sl) in ins.iter().zip(slices(&outs[0].shape, &parts, *axis)) {
                    let f = self.function("shape", k("concat_part"))?;
                    let (n, w, row, off) = (
                        sl.total as u64,
                        sl.width as u64,
                        sl.row as u64,
                        sl.offset as u64,
                    );
                    launch!(
                        self,
                        f,
                        grid(sl.total, 256),
                        ptr(i),
                        ptr(outs[0]),
                        n,
                        w,
                        row,
                        off
                    )?;
                }
                Ok(())
            }
            Op::Sum { axes } | Op::Mean { axes } | Op::Expand { axes, .. } => {
                let expand = matches!(op, Op::Expand { .. });
                let full = if expand { &outs[0].shape } else { s(0) };
                let r =
                    reduce_plan(full, axes, matches!(op, Op::Mean { .. })).ok_or_else(|| {
                        unavailable(format!("reductions over rank-{} tensors", full.rank()))
                    })?;
                let dims = Dims6 {
                    d: r.dims.map(|d| d as u64),
                };
                let rank = r.rank as u64;
                if expand {
                    let f = self.function("reduce", k("expand"))?;
                    launch!(
                        self,
                        f,
                        grid(n0 as usize, 256),
                        ptr(ins[0]),
                        ptr(outs[0]),
                        n0,
                        rank,
                        dims,
                        r.mask
                    )
                } else {
                    let (count, scale) = (r.count as u64, r.scale as f32);
                    let chunks = column_chunks(n0, count);
                    let partial = self.workspace(4 * n0 * chunks)?;
                    let f = self.function("reduce", k("sum_partial"))?;
                    launch!(
                        self,
                        f,
                        grid((n0 * chunks) as usize, 256),
                        ptr(ins[0]),
                        partial,
                        n0,
                        rank,
                        dims,
                        r.mask,
                        count,
                        chunks
                    )?;
                    let f = self.function("reduce", k("sum_finish"))?;
                    launch!(
                        self,
                        f,
                        grid(n0 as usize, 256),
                        partial,
                        ptr(outs[0]),
                        n0,
                        chunks,
                        scale
                    )
                }
            }
            Op::Reshape { .. } => Err(Error::Internal("reshape reached a kernel".into())),
        }
    }

    fn write(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("context", e))?;
        self.stream.synchronize().map_err(|e| drv_err("sync", e))?;
        // SAFETY: the block holds at least data.len() bytes (checked by Device).
        unsafe { drv::memcpy_htod_sync(ptr(dst), data) }.map_err(|e| drv_err("upload", e))
    }

    fn read(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("context", e))?;
        self.stream.synchronize().map_err(|e| drv_err("sync", e))?;
        let mut out = vec![0u8; src.byte_size() as usize];
        // SAFETY: the block holds byte_size bytes.
        unsafe { drv::memcpy_dtoh_sync(&mut out, ptr(src)) }.map_err(|e| drv_err("download", e))?;
        Ok(out)
    }

    fn accumulate(&mut self, dst: &TensorRef, src: &TensorRef) -> Result<()> {
        let n = dst.shape.numel() as u64;
        let f = self.function("elementwise", format!("accumulate_{}", suffix(dst.dtype)?))?;
        launch!(self, f, grid(n as usize, 256), ptr(dst), ptr(src), n)
    }

    /// Σx² over all tensors: one launch per dtype present (`sum_squares_multi`),
    /// 64 blocks per tensor, partial sums added here in a fixed order.
    fn sum_squares(&mut self, ts: &[&TensorRef]) -> Result<f64> {
        const BLOCKS: u64 = 64;
        if let Some(t) = ts
            .iter()
            .find(|t| !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16))
        {
            return Err(Error::dtype("sum_squares", "f32, f16 or bf16", t.dtype));
        }
        let mut total = 0f64;
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let group: Vec<&&TensorRef> = ts.iter().filter(|t| t.dtype == dt).collect();
            if group.is_empty() {
                continue;
            }
            if group.len() > 65535 {
                return Err(unavailable(format!(
                    "{} tensors in one sum-of-squares launch",
                    group.len()
                )));
            }
            let mut table: Vec<u8> = Vec::with_capacity(16 * group.len());
            for t in &group {
                table.extend_from_slice(&ptr(t).to_le_bytes());
                table.extend_from_slice(&(t.shape.numel() as u64).to_le_bytes());
            }
            let dev_table = self.upload_table(&table)?;
            let parts_len = BLOCKS as usize * group.len();
            let ws = self.workspace(4 * parts_len as u64)?;
            let f = self.function("optim", format!("sum_squares_multi_{}", suffix(dt)?))?;
            let cfg = LaunchConfig {
                grid_dim: (BLOCKS as u32, group.len() as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(self, f, cfg, dev_table, ws)?;
            self.stream.synchronize().map_err(|e| drv_err("sync", e))?;
            let mut parts = vec![0f32; parts_len];
            // SAFETY: the workspace holds at least parts_len floats.
            unsafe { drv::memcpy_dtoh_sync(&mut parts, ws) }.map_err(|e| drv_err("download", e))?;
            total += parts.iter().map(|&x| x as f64).sum::<f64>();
        }
        Ok(total)
    }

    /// AdamW over all parameters in one launch (`adamw_multi_f32`): a table of
    /// (param, grad, m, v, n, decay) goes to the device, one grid row each.
    fn adamw(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        if slots.len() > 65535 {
            return Err(unavailable(format!(
                "{} parameter tensors in one AdamW launch",
                slots.len()
            )));
        }
        let (bc1, bc2) = s.bias_corrections();
        let (bc1, bc2) = (bc1 as f32, bc2 as f32);
        // The kernel's AdamSlot: five u64 then two f32 (48 bytes).
        let mut table: Vec<u8> = Vec::with_capacity(48 * slots.len());
        let mut widest = 0u64;
        for slot in slots {
            slot.check_f32()?;
            let n = slot.param.shape.numel() as u64;
            widest = widest.max(n);
            for x in [ptr(slot.param), ptr(slot.grad), ptr(slot.m), ptr(slot.v), n] {
                table.extend_from_slice(&x.to_le_bytes());
            }
            table.extend_from_slice(&(s.decay_factor(slot.decay) as f32).to_le_bytes());
            table.extend_from_slice(&0f32.to_le_bytes());
        }
        let dev_table = self.upload_table(&table)?;
        let f = self.function("optim", "adamw_multi_f32".to_string())?;
        let cfg = LaunchConfig {
            grid_dim: (
                widest.div_ceil(256).clamp(1, 1024) as u32,
                slots.len() as u32,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            f,
            cfg,
            dev_table,
            s.lr as f32,
            s.beta1 as f32,
            s.beta2 as f32,
            s.eps as f32,
            bc1,
            bc2,
            s.grad_scale as f32,
        )
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        for (p, _) in [self.workspace.take(), self.slots.take()]
            .into_iter()
            .flatten()
        {
            // SAFETY: allocated by this backend, freed once.
            let _ = unsafe { drv::free_sync(p) };
        }
        // SAFETY: the handle was created in open and is destroyed once.
        let _ = unsafe { blas::destroy_handle(self.blas) };
    }
}
