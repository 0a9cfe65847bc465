//! Device memory. Each backend provides a [`RawMemory`] (whole segments from the
//! device); every tensor is a [`Block`] handed out by the [`Allocator`] above it.
//! Ops never allocate: the executor does, so swapping the allocator (for the
//! caching one) or the raw memory (for a simulated device) touches no op.

use crate::error::{Error, Result};

/// A segment obtained from the device. `handle` is backend-defined: a host
/// address on cpu, a device pointer on cuda, a buffer id on wgpu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub handle: u64,
    pub bytes: u64,
}

/// A device refused an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceOutOfMemory {
    pub requested: u64,
}

/// Raw device memory: whole segments, no caching.
pub trait RawMemory {
    fn alloc(&mut self, bytes: u64) -> Result<Segment, DeviceOutOfMemory>;
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

/// A tensor's memory: `bytes` at `offset` within segment `handle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub handle: u64,
    pub offset: u64,
    pub bytes: u64,
}

/// Allocation counters, named as PyTorch names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub allocated_bytes: u64,
    pub reserved_bytes: u64,
    pub peak_allocated_bytes: u64,
    pub peak_reserved_bytes: u64,
    pub num_allocs: u64,
    pub num_frees: u64,
}

/// The allocator every tensor goes through. For now one segment per block (no
/// caching); the caching allocator replaces its insides, not its interface.
pub struct Allocator<R: RawMemory> {
    raw: R,
    stats: MemoryStats,
}

impl<R: RawMemory> Allocator<R> {
    pub fn new(raw: R) -> Self {
        Allocator {
            raw,
            stats: MemoryStats::default(),
        }
    }

    pub fn alloc(&mut self, bytes: u64) -> Result<Block> {
        // Zero-sized tensors still get a distinct, valid block.
        let size = bytes.max(1);
        let seg = self.raw.alloc(size).map_err(|e| Error::OutOfMemory {
            requested: e.requested,
            allocated: self.stats.allocated_bytes,
            reserved: self.stats.reserved_bytes,
            device_free: self.raw.free_bytes(),
        })?;
        let s = &mut self.stats;
        s.allocated_bytes += seg.bytes;
        s.reserved_bytes += seg.bytes;
        s.peak_allocated_bytes = s.peak_allocated_bytes.max(s.allocated_bytes);
        s.peak_reserved_bytes = s.peak_reserved_bytes.max(s.reserved_bytes);
        s.num_allocs += 1;
        Ok(Block {
            handle: seg.handle,
            offset: 0,
            bytes: seg.bytes,
        })
    }

    pub fn free(&mut self, b: Block) {
        self.raw.free(Segment {
            handle: b.handle,
            bytes: b.bytes,
        });
        let s = &mut self.stats;
        s.allocated_bytes -= b.bytes;
        s.reserved_bytes -= b.bytes;
        s.num_frees += 1;
    }

    pub fn stats(&self) -> MemoryStats {
        self.stats
    }

    pub fn raw(&self) -> &R {
        &self.raw
    }
}
