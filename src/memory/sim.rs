//! Raw memories with no data: a simulated device for the planner, and a wrapper
//! that fails on demand for tests of the retry and recovery paths.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::{DeviceOutOfMemory, RawMemory, Segment};

/// A device of a set capacity that hands out address ranges and stores nothing.
/// Running a program through a `CachingAllocator<SimMemory>` gives the exact
/// peak the real allocator would reach.
#[derive(Clone, Debug)]
pub struct SimMemory {
    capacity: u64,
    used: u64,
    next: u64,
}

impl SimMemory {
    /// An empty device of `capacity` bytes; allocations beyond it fail with
    /// [`DeviceOutOfMemory`].
    pub fn new(capacity: u64) -> SimMemory {
        SimMemory {
            capacity,
            used: 0,
            next: 1 << 40,
        }
    }
    /// Bytes in segments handed out and not yet freed.
    pub fn used(&self) -> u64 {
        self.used
    }
}

impl RawMemory for SimMemory {
    fn alloc(&mut self, bytes: u64) -> Result<Segment, DeviceOutOfMemory> {
        if self.used + bytes > self.capacity {
            return Err(DeviceOutOfMemory { requested: bytes });
        }
        self.used += bytes;
        let handle = self.next;
        // Segments never overlap: each gets a fresh range with a gap after it.
        self.next += bytes.div_ceil(1 << 21).max(1) * (1 << 21) + (1 << 21);
        Ok(Segment { handle, bytes })
    }
    fn free(&mut self, seg: Segment) {
        self.used -= seg.bytes;
    }
    fn total_bytes(&self) -> u64 {
        self.capacity
    }
    fn free_bytes(&self) -> u64 {
        self.capacity - self.used
    }
}

/// What a [`FaultyMemory`] does next; shared with the test that drives it.
#[derive(Debug, Default)]
pub struct Faults {
    /// Outcome of upcoming allocations, in order: `true` fails it. Allocations
    /// past the end succeed.
    pub script: VecDeque<bool>,
    /// When set, the device has only this many bytes (another process took the rest).
    pub capacity: Option<u64>,
    /// Device allocations attempted so far.
    pub attempts: u64,
}

/// Wraps a raw memory and fails allocations as a test scripts it.
pub struct FaultyMemory<R: RawMemory> {
    inner: R,
    used: u64,
    faults: Rc<RefCell<Faults>>,
}

impl<R: RawMemory> FaultyMemory<R> {
    /// Wraps `inner`, failing nothing yet; returns the wrapper and the shared
    /// [`Faults`] through which a test scripts failures and counts attempts.
    pub fn new(inner: R) -> (FaultyMemory<R>, Rc<RefCell<Faults>>) {
        let faults = Rc::new(RefCell::new(Faults::default()));
        (
            FaultyMemory {
                inner,
                used: 0,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

impl<R: RawMemory> RawMemory for FaultyMemory<R> {
    fn alloc(&mut self, bytes: u64) -> Result<Segment, DeviceOutOfMemory> {
        let mut f = self.faults.borrow_mut();
        f.attempts += 1;
        let scripted_fail = f.script.pop_front().unwrap_or(false);
        let over = f.capacity.is_some_and(|c| self.used + bytes > c);
        if scripted_fail || over {
            return Err(DeviceOutOfMemory { requested: bytes });
        }
        let s = self.inner.alloc(bytes)?;
        self.used += s.bytes;
        Ok(s)
    }
    fn free(&mut self, seg: Segment) {
        self.used -= seg.bytes;
        self.inner.free(seg)
    }
    fn total_bytes(&self) -> u64 {
        self.inner.total_bytes()
    }
    fn free_bytes(&self) -> u64 {
        let cap = self.faults.borrow().capacity;
        match cap {
            Some(c) => c.saturating_sub(self.used).min(self.inner.free_bytes()),
            None => self.inner.free_bytes(),
        }
    }
}
