//! Allocator counters, named as PyTorch's `torch.cuda.memory_stats` names them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::budget::format_bytes;

/// A snapshot of the [`CachingAllocator`](super::CachingAllocator)'s counters.
/// "Allocated" is what tensors hold; "reserved" is what the allocator holds
/// from the device, allocated plus cached free blocks, and is what the budget
/// caps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Bytes in blocks handed to tensors (rounded block sizes).
    pub allocated_bytes: u64,
    /// Bytes held from the device in segments (allocated + cached).
    pub reserved_bytes: u64,
    /// Highest `allocated_bytes` since creation or the last peak reset.
    pub peak_allocated_bytes: u64,
    /// Highest `reserved_bytes` since creation or the last peak reset.
    pub peak_reserved_bytes: u64,
    /// Bytes tensors asked for, before rounding.
    pub requested_bytes: u64,
    /// Successful block allocations so far.
    pub num_allocs: u64,
    /// Blocks freed so far.
    pub num_frees: u64,
    /// Segments obtained from / returned to the device.
    pub num_segment_allocs: u64,
    /// Segments returned to the device when the cache was emptied.
    pub num_segment_frees: u64,
    /// Device allocations that failed and were retried after flushing the cache.
    pub num_alloc_retries: u64,
    /// Allocations that failed for good.
    pub num_ooms: u64,
}

impl MemoryStats {
    /// 1 − peak allocated ÷ peak reserved: the share of the high-water mark that
    /// held no tensor.
    pub fn fragmentation(&self) -> f64 {
        if self.peak_reserved_bytes == 0 {
            0.0
        } else {
            1.0 - self.peak_allocated_bytes as f64 / self.peak_reserved_bytes as f64
        }
    }

    /// Reserved now but not holding any tensor.
    pub fn reserved_unallocated_bytes(&self) -> u64 {
        self.reserved_bytes - self.allocated_bytes
    }
}

impl fmt::Display for MemoryStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("allocated", format_bytes(self.allocated_bytes)),
            ("reserved", format_bytes(self.reserved_bytes)),
            ("peak allocated", format_bytes(self.peak_allocated_bytes)),
            ("peak reserved", format_bytes(self.peak_reserved_bytes)),
            (
                "reserved but unallocated",
                format_bytes(self.reserved_unallocated_bytes()),
            ),
            (
                "fragmentation",
                format!("{:.1}%", 100.0 * self.fragmentation()),
            ),
            (
                "allocs / frees",
                format!("{} / {}", self.num_allocs, self.num_frees),
            ),
            (
                "segment allocs / frees",
                format!("{} / {}", self.num_segment_allocs, self.num_segment_frees),
            ),
            ("alloc retries", self.num_alloc_retries.to_string()),
            ("OOMs", self.num_ooms.to_string()),
        ];
        writeln!(f, "{:<26} {:>14}", "memory", "")?;
        for (k, v) in rows {
            writeln!(f, "  {k:<24} {v:>14}")?;
        }
        Ok(())
    }
}
