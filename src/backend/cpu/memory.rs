//! Host memory as the cpu backend's device memory.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;

use crate::memory::{DeviceOutOfMemory, RawMemory, Segment};

/// Every segment is 64-byte aligned, so any block offset the allocator hands out
/// (a multiple of 512) is aligned for every dtype.
const ALIGN: usize = 64;

/// Host memory as raw device memory: each segment is a zeroed, 64-byte-aligned
/// heap allocation whose address is its handle. Total and free bytes come from
/// `/proc/meminfo` (effectively unlimited where that is missing).
#[derive(Default)]
pub struct CpuMemory {
    live: HashMap<u64, Layout>,
}

impl RawMemory for CpuMemory {
    fn alloc(&mut self, bytes: u64) -> Result<Segment, DeviceOutOfMemory> {
        let oom = DeviceOutOfMemory { requested: bytes };
        let layout = Layout::from_size_align(bytes.max(1) as usize, ALIGN).map_err(|_| oom)?;
        // SAFETY: layout has non-zero size. Zeroed so that no kernel can ever read
        // uninitialised bytes.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(oom);
        }
        self.live.insert(ptr as u64, layout);
        Ok(Segment {
            handle: ptr as u64,
            bytes,
        })
    }

    fn free(&mut self, seg: Segment) {
        if let Some(layout) = self.live.remove(&seg.handle) {
            // SAFETY: the pointer came from alloc_zeroed with this layout.
            unsafe { dealloc(seg.handle as *mut u8, layout) }
        }
    }

    fn total_bytes(&self) -> u64 {
        meminfo("MemTotal:").unwrap_or(u64::MAX / 2)
    }

    fn free_bytes(&self) -> u64 {
        host_available_bytes()
    }
}

impl Drop for CpuMemory {
    fn drop(&mut self) {
        for (&p, &layout) in &self.live {
            // SAFETY: as in free.
            unsafe { dealloc(p as *mut u8, layout) }
        }
    }
}

/// Host memory available to a new allocation now (`MemAvailable`), for the
/// checks that keep a run's host memory bounded; effectively unlimited where
/// the platform does not say.
pub fn host_available_bytes() -> u64 {
    meminfo("MemAvailable:").unwrap_or(u64::MAX / 2)
}

/// A field of /proc/meminfo in bytes (Linux); `None` elsewhere.
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
