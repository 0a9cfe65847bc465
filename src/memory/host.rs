//! The host pool: what a plan moves off the device (offloaded optimizer
//! state) lives in host memory through a caching allocator of its own, so a
//! plan predicts the host's peak as exactly as the device's, and a host
//! budget bounds it. DeepSpeed's and FSDP's offload users find out about host
//! RAM when the kernel's OOM killer does; here it is planned.

use super::{Block, CachingAllocator, MemoryStats, RawMemory, Tag};
use crate::error::{Error, Result};
use crate::tensor::{DType, Shape};

/// Share of the host memory available at start that the host pool may use
/// when no budget is given: the rest is for the process itself, the data and
/// the system.
pub const DEFAULT_HOST_SHARE: f64 = 0.5;

/// Host bytes owned by one tensor; give them back with
/// [`HostPool::free`] (through `Device::host_free`).
#[derive(Debug)]
pub struct HostBuf {
    pub(crate) block: Block,
    /// The tensor's shape.
    pub shape: Shape,
    /// Its element type.
    pub dtype: DType,
}

impl HostBuf {
    /// Bytes the elements occupy.
    pub fn byte_size(&self) -> u64 {
        self.shape.byte_size(self.dtype)
    }
}

/// Host memory for offloaded tensors, with its own allocator, counters and
/// budget. On a simulated device it stores nothing, like the device.
pub struct HostPool {
    memory: CachingAllocator<Box<dyn RawMemory>>,
    real: bool,
}

impl HostPool {
    /// A pool over `raw`; `real`: its handles are host addresses.
    pub fn new(raw: Box<dyn RawMemory>, real: bool) -> HostPool {
        HostPool {
            memory: CachingAllocator::new(raw),
            real,
        }
    }

    /// A tensor's worth of host bytes, zeroed where real.
    pub fn alloc(&mut self, shape: Shape, dtype: DType) -> Result<HostBuf> {
        let bytes = shape.byte_size(dtype);
        let block = self.memory.alloc(bytes).map_err(|_| {
            let s = self.memory.stats();
            Error::HostOutOfMemory {
                requested: bytes,
                allocated: s.allocated_bytes,
                budget: self.memory.budget(),
            }
        })?;
        let h = HostBuf {
            block,
            shape,
            dtype,
        };
        if let Some(b) = self.bytes_mut(&h) {
            // A reused cached block holds an earlier tensor's bytes.
            b.fill(0);
        }
        Ok(h)
    }

    /// Gives the bytes back to the pool's cache.
    pub fn free(&mut self, h: HostBuf) {
        self.memory.free(h.block)
    }

    /// The tensor's bytes; `None` on a simulated device.
    pub fn bytes(&self, h: &HostBuf) -> Option<&[u8]> {
        // SAFETY: a real pool's handles are host addresses of live segments
        // (CpuMemory), and the block holds at least byte_size bytes.
        self.real.then(|| unsafe {
            std::slice::from_raw_parts(
                (h.block.handle + h.block.offset) as *const u8,
                h.byte_size() as usize,
            )
        })
    }

    /// As [`HostPool::bytes`], writable.
    pub fn bytes_mut(&mut self, h: &HostBuf) -> Option<&mut [u8]> {
        // SAFETY: as in `bytes`; `&mut self` and the pool's disjoint blocks
        // mean no other reference to these bytes exists.
        self.real.then(|| unsafe {
            std::slice::from_raw_parts_mut(
                (h.block.handle + h.block.offset) as *mut u8,
                h.byte_size() as usize,
            )
        })
    }

    /// The pool's counters.
    pub fn stats(&self) -> MemoryStats {
        self.memory.stats()
    }

    /// Caps the bytes the pool may reserve (`None`: only the host's memory).
    pub fn set_budget(&mut self, bytes: Option<u64>) {
        self.memory.set_budget(bytes)
    }

    /// The cap, if any.
    pub fn budget(&self) -> Option<u64> {
        self.memory.budget()
    }

    /// Tags the allocations that follow.
    pub fn set_tag(&mut self, tag: Tag) {
        self.memory.set_tag(tag)
    }

    /// Starts a new high-water mark.
    pub fn reset_peak_stats(&mut self) {
        self.memory.reset_peak_stats()
    }

    /// Returns cached, unused segments to the host.
    pub fn empty_cache(&mut self) {
        self.memory.empty_cache()
    }
}

/// The default host budget: [`DEFAULT_HOST_SHARE`] of `available` bytes.
pub fn default_host_budget(available: u64) -> u64 {
    (available as f64 * DEFAULT_HOST_SHARE) as u64
}
