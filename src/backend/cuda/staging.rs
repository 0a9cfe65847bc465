//! Uploads through pinned host memory: the bytes are copied into a pinned ring
//! and queued as an asynchronous copy on the backend's stream, so the host does
//! not wait for the GPU before each upload (tokens, targets, the loss seed and
//! the optimizer's tables, every step). One stream keeps the order: the copy
//! runs after the kernels queued before it (which may still read the
//! destination) and before those queued after it. A region of the ring is
//! reused only once the event recorded after its copy has passed.
//!
//! Uploads larger than the ring (weights at setup) take the blocking path.

use std::collections::VecDeque;

use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaEvent, CudaStream};
use std::sync::Arc;

use super::context::drv_err;
use crate::error::Result;

/// Bytes of pinned memory kept for uploads: a step's own uploads are a few
/// hundred KiB (GPT-2 at 16 × 1024: 2 × 64 KiB of token ids and targets).
pub(super) const RING_BYTES: usize = 8 << 20;

pub(super) struct Staging {
    ctx: Arc<CudaContext>,
    /// The pinned buffer, `RING_BYTES` long.
    base: *mut u8,
    /// Where the next region starts.
    head: usize,
    /// Regions `[start, end)` whose copies may still be reading them.
    inflight: VecDeque<(usize, usize, CudaEvent)>,
    /// Events of finished regions, for reuse.
    spare: Vec<CudaEvent>,
}

impl Staging {
    pub(super) fn new(ctx: Arc<CudaContext>) -> Result<Staging> {
        ctx.bind_to_thread().map_err(|e| drv_err("context", e))?;
        // SAFETY: a plain pinned allocation, freed in Drop; its bytes are
        // written before any copy reads them.
        let base = unsafe { drv::malloc_host(RING_BYTES, 0) }
            .map_err(|e| drv_err("pinned staging buffer", e))? as *mut u8;
        Ok(Staging {
            ctx,
            base,
            head: 0,
            inflight: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    /// Queues `dst ← data` on `stream` through the ring; `false` (nothing
    /// queued) when `data` does not fit the ring.
    pub(super) fn upload(&mut self, stream: &CudaStream, dst: u64, data: &[u8]) -> Result<bool> {
        let n = data.len();
        if n > RING_BYTES {
            return Ok(false);
        }
        let start = if self.head + n > RING_BYTES {
            0
        } else {
            self.head
        };
        let end = start + n;
        // Wait for the copies still reading [start, end).
        let mut keep = VecDeque::with_capacity(self.inflight.len());
        while let Some((a, b, ev)) = self.inflight.pop_front() {
            if a < end && start < b {
                ev.synchronize().map_err(|e| drv_err("staging event", e))?;
                self.spare.push(ev);
            } else {
                keep.push_back((a, b, ev));
            }
        }
        self.inflight = keep;
        // SAFETY: [start, end) lies in the ring and no copy reads it any more;
        // the copy below reads it after this write, in stream order, and the
        // region is not rewritten until its event has passed.
        unsafe {
            let region = std::slice::from_raw_parts_mut(self.base.add(start), n);
            region.copy_from_slice(data);
            drv::memcpy_htod_async(dst, region, stream.cu_stream())
        }
        .map_err(|e| drv_err("upload", e))?;
        let ev = match self.spare.pop() {
            Some(ev) => ev,
            None => self
                .ctx
                .new_event(Some(drv_sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(|e| drv_err("event", e))?,
        };
        ev.record(stream).map_err(|e| drv_err("event record", e))?;
        self.inflight.push_back((start, end, ev));
        self.head = end;
        Ok(true)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for (_, _, ev) in self.inflight.drain(..) {
            let _ = ev.synchronize();
        }
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_host in `new`; no copy reads it now.
            let _ = unsafe { drv::free_host(self.base as *mut std::ffi::c_void) };
        }
    }
}
