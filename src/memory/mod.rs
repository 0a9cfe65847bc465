//! Device memory. Each backend provides a [`RawMemory`] (whole segments from the
//! device); every tensor is a [`Block`] handed out by the [`CachingAllocator`]
//! above it. Ops never allocate: the executor does, so swapping the raw memory
//! (for a simulated device, or one that fails on demand) touches no op.

pub mod budget;
pub mod caching;
pub mod host;
pub mod sim;
pub mod stats;
pub mod timeline;

pub use budget::{format_bytes, Budget};
pub use caching::{Block, CachingAllocator};
pub use host::{HostBuf, HostPool};
pub use sim::{Faults, FaultyMemory, SimMemory};
pub use stats::MemoryStats;
pub use timeline::{MemPhase, Tag, TensorKind, Trace};

/// A segment obtained from the device. `handle` is backend-defined: a host
/// address on cpu, a device pointer on cuda, a buffer id on wgpu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Identifies the segment to its backend; every [`Block`] carved from it
    /// carries the same handle.
    pub handle: u64,
    /// Size of the segment in bytes, as requested from [`RawMemory::alloc`].
    pub bytes: u64,
}

/// A device refused an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceOutOfMemory {
    /// Size in bytes of the segment that was refused.
    pub requested: u64,
}

/// Raw device memory: whole segments, no caching.
pub trait RawMemory {
    /// Obtains a new segment of `bytes` bytes from the device, or
    /// [`DeviceOutOfMemory`] when the device (or a test's script) refuses it.
    /// The counterpart of `cudaMalloc`: the [`CachingAllocator`] calls it only
    /// when no cached block can serve a request.
    fn alloc(&mut self, bytes: u64) -> Result<Segment, DeviceOutOfMemory>;
    /// Returns a segment obtained from [`RawMemory::alloc`] to the device.
    fn free(&mut self, seg: Segment);
    /// Total memory of the device, in bytes.
    fn total_bytes(&self) -> u64;
    /// Memory the device could still hand out, in bytes.
    fn free_bytes(&self) -> u64;
}

impl<R: RawMemory + ?Sized> RawMemory for Box<R> {
    fn alloc(&mut self, bytes: u64) -> Result<Segment, DeviceOutOfMemory> {
        (**self).alloc(bytes)
    }
    fn free(&mut self, seg: Segment) {
        (**self).free(seg)
    }
    fn total_bytes(&self) -> u64 {
        (**self).total_bytes()
    }
    fn free_bytes(&self) -> u64 {
        (**self).free_bytes()
    }
}
