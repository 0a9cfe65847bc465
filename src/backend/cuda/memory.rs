//! Device memory: the allocator's raw segments through plain
//! `cuMemAlloc`/`cuMemFree` (not the stream-ordered pool, so reserved bytes are
//! the truth), the few small side buffers the backend keeps outside the
//! allocator, and host ↔ device copies.

use std::sync::Arc;

use cudarc::driver::{result as drv, CudaContext};

use super::context::{drv_err, CudaBackend};
use super::launch::ptr;
use super::staging::Staging;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::memory::{DeviceOutOfMemory, RawMemory, Segment};

/// Device memory through cuMemAlloc / cuMemFree.
pub struct CudaMemory {
    ctx: Arc<CudaContext>,
}

impl CudaMemory {
    pub(super) fn new(ctx: Arc<CudaContext>) -> CudaMemory {
        CudaMemory { ctx }
    }
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

impl CudaBackend {
    /// A device buffer of at least `bytes` for intermediate sums.
    pub(super) fn workspace(&mut self, bytes: u64) -> Result<u64> {
        let mut slot = self.workspace.take();
        let r = self.side_buffer(&mut slot, bytes);
        self.workspace = slot;
        r
    }

    /// Copies a launch's table (AdamW slots, Σx² slots) to a device buffer kept
    /// outside the allocator, grown as needed; returns its address.
    pub(super) fn upload_table(&mut self, table: &[u8]) -> Result<u64> {
        let mut slot = self.slots.take();
        let r = self.side_buffer(&mut slot, table.len() as u64);
        self.slots = slot;
        let dev_table = r?;
        self.upload_bytes(dev_table, table)?;
        Ok(dev_table)
    }

    /// Grows a small buffer kept outside the allocator (a few KiB): the old one
    /// is freed once no kernel can still be using it.
    fn side_buffer(&mut self, slot: &mut Option<(u64, u64)>, bytes: u64) -> Result<u64> {
        if let Some((p, n)) = *slot {
            if n >= bytes {
                return Ok(p);
            }
            self.sync()?;
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

    /// Waits for every launch so far.
    pub(super) fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| drv_err("sync", e))
    }

    /// `data` into `dst`, after the work queued so far.
    pub(super) fn upload(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()> {
        // The block holds at least data.len() bytes (checked by Device).
        self.upload_bytes(ptr(dst), data)
    }

    /// `data` to device address `dst`, ordered after the work queued so far:
    /// through the pinned ring without waiting ([`super::staging`]), or, for
    /// what does not fit it, a blocking copy after a sync.
    fn upload_bytes(&mut self, dst: u64, data: &[u8]) -> Result<()> {
        self.bind()?;
        if self.staging.is_none() {
            self.staging = Some(Staging::new(self.ctx.clone())?);
        }
        if let Some(staging) = self.staging.as_mut() {
            if staging.upload(&self.stream, dst, data)? {
                return Ok(());
            }
        }
        self.sync()?;
        // SAFETY: the caller's buffer at dst holds data.len() bytes.
        unsafe { drv::memcpy_htod_sync(dst, data) }.map_err(|e| drv_err("upload", e))
    }

    /// `src`'s bytes, after the work queued so far.
    pub(super) fn download(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        self.bind()?;
        self.sync()?;
        let mut out = vec![0u8; src.byte_size() as usize];
        // SAFETY: the block holds byte_size bytes.
        unsafe { drv::memcpy_dtoh_sync(&mut out, ptr(src)) }.map_err(|e| drv_err("download", e))?;
        Ok(out)
    }
}
