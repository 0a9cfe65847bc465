//! The backend's state on one GPU: its context and stream, the cuBLAS handle,
//! the modules compiled so far and the functions looked up in them, and the
//! typed errors every part of the backend reports with.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{
    result as drv, sys as drv_sys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaStream,
};
use cudarc::nvrtc::Ptx;

use super::compile;
use super::launch::Entry;
use super::memory::CudaMemory;
use crate::error::{Error, Result};
use crate::tensor::DType;

pub(super) fn unavailable(what: impl Into<String>) -> Error {
    Error::Unsupported {
        backend: "cuda",
        what: what.into(),
        hint: "install an NVIDIA driver (and CUDA's NVRTC and cuBLAS libraries), or use the wgpu or cpu backend (Device::by_name)",
    }
}

pub(super) fn drv_err(what: &str, e: impl std::fmt::Debug) -> Error {
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

/// The cuda backend on one GPU: a context, its default stream, a cuBLAS handle,
/// and the kernels compiled so far for the device's architecture.
pub struct CudaBackend {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    pub(super) blas: blas_sys::cublasHandle_t,
    pub(super) arch: String,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: HashMap<String, CudaFunction>,
    /// Small buffers outside the allocator: per-row losses, attention's row
    /// statistics, reduction partials.
    pub(super) workspace: Option<(u64, u64)>,
    /// The AdamW parameter table (48 bytes a parameter), outside the allocator.
    pub(super) slots: Option<(u64, u64)>,
    /// The GPU's name as the driver reports it (`GPU <ordinal>` if it cannot).
    pub device_name: String,
    /// Set when kernels/attention_fa.cu failed to compile:
    /// attention stays on attention.cu from then on.
    pub(super) tc_attention_broken: bool,
    /// HEADROOM_CUDA_SYNC=1: wait after every op, so that a fault names the op
    /// that caused it instead of surfacing at the next sync.
    pub(super) sync_each_op: bool,
    /// Timing events for profiles: `events[..events_used]` are recorded since
    /// the last take; the rest are kept for reuse.
    pub(super) events: Vec<CudaEvent>,
    pub(super) events_used: usize,
    /// Pinned memory for uploads, made at the first one.
    pub(super) staging: Option<super::staging::Staging>,
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
        compile::prewarm(&format!("sm_{major}{minor}"));
        let mem = CudaMemory::new(ctx.clone());
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
                sync_each_op: std::env::var("HEADROOM_CUDA_SYNC").is_ok_and(|v| v == "1"),
                events: Vec::new(),
                events_used: 0,
                staging: None,
            },
            mem,
        ))
    }

    /// The compute capability as one number (90 for sm_90; 0 if unparsable).
    pub(super) fn sm(&self) -> u32 {
        self.arch.trim_start_matches("sm_").parse().unwrap_or(0)
    }

    /// `entry`'s kernel for `dtype`, compiling its file at first use.
    pub(super) fn function(&mut self, entry: Entry, dtype: DType) -> Result<CudaFunction> {
        let name = entry.symbol(dtype)?;
        if let Some(f) = self.functions.get(&name) {
            return Ok(f.clone());
        }
        let file = entry.file();
        if !self.modules.contains_key(file) {
            let cubin = compile::compile_shared(file, entry.source(), &self.arch)?;
            let m = self
                .ctx
                .load_module(Ptx::from_binary(cubin.to_vec()))
                .map_err(|e| drv_err(&format!("loading kernels/{file}.cu"), e))?;
            self.modules.insert(file, m);
        }
        let f = self.modules[file]
            .load_function(&name)
            .map_err(|e| drv_err(&format!("kernel {name}"), e))?;
        self.functions.insert(name, f.clone());
        Ok(f)
    }

    /// Queues a timing event after the work so far; its index since the last
    /// [`CudaBackend::take_event_times`].
    pub(super) fn record_event(&mut self) -> Result<usize> {
        if self.events_used == self.events.len() {
            let flags = drv_sys::CUevent_flags::CU_EVENT_DEFAULT;
            let e = self
                .ctx
                .new_event(Some(flags))
                .map_err(|e| drv_err("event", e))?;
            self.events.push(e);
        }
        let i = self.events_used;
        self.events[i]
            .record(&self.stream)
            .map_err(|e| drv_err("event record", e))?;
        self.events_used += 1;
        Ok(i)
    }

    /// The recorded events' times in ms after the first, once the stream
    /// reaches them; the events are then free for reuse.
    pub(super) fn take_event_times(&mut self) -> Result<Vec<f64>> {
        let used = std::mem::take(&mut self.events_used);
        let Some(first) = self.events[..used].first() else {
            return Ok(Vec::new());
        };
        self.events[..used]
            .iter()
            .map(|e| {
                first
                    .elapsed_ms(e)
                    .map(f64::from)
                    .map_err(|e| drv_err("event time", e))
            })
            .collect()
    }

    /// Binds the backend's context to the calling thread.
    pub(super) fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| drv_err("context", e))
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
