//! The caching allocator, one implementation for every backend (and for the
//! simulated device the planner runs programs on). Rules as PyTorch's CUDA
//! caching allocator: requests rounded to 512 bytes; ≤ 1 MiB from 2 MiB segments
//! (small pool); up to 10 MiB from 20 MiB segments; larger rounded to 2 MiB;
//! best fit; split only when the rest is worth keeping; freed neighbours merge;
//! on a failed device allocation, free cached segments and retry once.
//!
//! One deliberate difference: a budget is checked before the device is asked,
//! and a large request whose 20 MiB segment would break the budget falls back to
//! a segment of its own size (rounded to 2 MiB) instead of failing.

use std::collections::BTreeSet;

use super::timeline::{Event, EventKind, Tag};
use super::{MemoryStats, RawMemory, Segment};
use crate::error::{Error, Result};

/// Every request is rounded up to a multiple of this many bytes (PyTorch's
/// `kMinBlockSize`), so every block offset is 512-aligned: enough for any dtype
/// and for wgpu's storage-buffer offset alignment.
pub const MIN_BLOCK: u64 = 512;
/// Largest rounded request served from the small pool (`kSmallSize`, 1 MiB).
/// Also the split threshold of the large pool: a large block is split only
/// when more than this would be left over.
pub const SMALL_SIZE: u64 = 1 << 20;
/// Size of the segments the small pool asks the device for (`kSmallBuffer`, 2 MiB).
pub const SMALL_BUFFER: u64 = 2 << 20;
/// Size of the segments for large requests below [`MIN_LARGE_ALLOC`]
/// (`kLargeBuffer`, 20 MiB), so several of them share one segment.
pub const LARGE_BUFFER: u64 = 20 << 20;
/// Requests of at least this many bytes (`kMinLargeAlloc`, 10 MiB) get a segment
/// of their own size, rounded up to [`ROUND_LARGE`].
pub const MIN_LARGE_ALLOC: u64 = 10 << 20;
/// Granularity of segments sized to one request (`kRoundLarge`, 2 MiB).
pub const ROUND_LARGE: u64 = 2 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
/// The two pools of segments, as in PyTorch: a free block serves only requests
/// of its own pool, so small tensors do not fragment large segments.
pub enum Pool {
    /// Requests up to [`SMALL_SIZE`], carved from [`SMALL_BUFFER`] segments.
    Small,
    /// Requests above [`SMALL_SIZE`].
    Large,
}

/// A tensor's memory: `bytes` at `offset` within segment `handle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Handle of the segment holding the block (see [`Segment::handle`]).
    pub handle: u64,
    /// Byte offset of the block within its segment; a multiple of [`MIN_BLOCK`].
    pub offset: u64,
    /// The block's size: the request rounded up, or more in the large pool,
    /// where a block is handed out whole when splitting would leave 1 MiB or less.
    pub bytes: u64,
    slot: u32,
}

impl Block {
    /// The `bytes` at `offset` within this block, as a view for an op to
    /// read or write (a chunk of a tensor); never to be freed itself.
    pub fn part(&self, offset: u64, bytes: u64) -> Block {
        debug_assert!(offset + bytes <= self.bytes);
        Block {
            handle: self.handle,
            offset: self.offset + offset,
            bytes,
            slot: self.slot,
        }
    }
}

#[derive(Clone, Debug)]
struct Info {
    handle: u64,
    /// Order in which the segment was obtained. Best fit breaks ties by it, not
    /// by the device address, so a simulated device makes the same choices as a
    /// real one whatever addresses each hands out.
    seg: u64,
    offset: u64,
    size: u64,
    requested: u64,
    allocated: bool,
    pool: Pool,
    prev: Option<usize>,
    next: Option<usize>,
}

type FreeKey = (u64, u64, u64, usize); // (size, segment order, offset, slot): best fit first

/// The block size for a request of `bytes`: rounded up to a multiple of
/// [`MIN_BLOCK`], and at least one [`MIN_BLOCK`] (a 0-byte tensor still gets a block).
pub fn round_size(bytes: u64) -> u64 {
    bytes.max(1).div_ceil(MIN_BLOCK) * MIN_BLOCK
}

/// The pool that serves a block of (rounded) `size` bytes: [`Pool::Small`] up to
/// and including [`SMALL_SIZE`], [`Pool::Large`] above.
pub fn pool_of(size: u64) -> Pool {
    if size <= SMALL_SIZE {
        Pool::Small
    } else {
        Pool::Large
    }
}

/// The segment size a new request of (rounded) `size` asks the device for.
pub fn segment_size(size: u64) -> u64 {
    if size <= SMALL_SIZE {
        SMALL_BUFFER
    } else if size < MIN_LARGE_ALLOC {
        LARGE_BUFFER
    } else {
        size.div_ceil(ROUND_LARGE) * ROUND_LARGE
    }
}

fn should_split(pool: Pool, remaining: u64) -> bool {
    match pool {
        Pool::Small => remaining >= MIN_BLOCK,
        Pool::Large => remaining > SMALL_SIZE,
    }
}

/// Hands tensors [`Block`]s carved from segments of a [`RawMemory`], with
/// PyTorch's caching rules (see the module docs). A freed block stays cached
/// for reuse rather than going back to the device, so "reserved" (segments
/// held) is at least "allocated" (blocks in use). Segments go back to the
/// device only through [`empty_cache`] (called directly, before a failed
/// allocation's retry, and when the budget is lowered below reserved) and when
/// the allocator is dropped. A new segment is taken only if reserved bytes stay
/// within the budget.
///
/// [`empty_cache`]: CachingAllocator::empty_cache
///
/// ```
/// use headroom::memory::{CachingAllocator, SimMemory};
///
/// let mut a = CachingAllocator::with_budget(SimMemory::new(1 << 30), Some(64 << 20));
/// let b = a.alloc(1000).unwrap();
/// assert_eq!(b.bytes, 1024); // rounded to 512 B
/// assert_eq!(a.stats().reserved_bytes, 2 << 20); // one small-pool segment
/// a.free(b);
/// assert_eq!(a.stats().allocated_bytes, 0);
/// assert_eq!(a.stats().reserved_bytes, 2 << 20); // cached, not returned
/// a.empty_cache();
/// assert_eq!(a.stats().reserved_bytes, 0);
/// assert!(a.alloc(100 << 20).is_err()); // over the 64 MiB budget
/// assert_eq!(a.stats().num_ooms, 1);
/// ```
pub struct CachingAllocator<R: RawMemory> {
    raw: R,
    budget: Option<u64>,
    blocks: Vec<Info>,
    vacant: Vec<usize>,
    free: [BTreeSet<FreeKey>; 2],
    stats: MemoryStats,
    tag: Tag,
    step: u64,
    trace: Option<Vec<Event>>,
    /// Fault injection: fail the allocation this many calls from now.
    fail_in: Option<u64>,
}

impl<R: RawMemory> CachingAllocator<R> {
    /// An allocator over `raw` with no budget and an empty cache.
    pub fn new(raw: R) -> Self {
        CachingAllocator {
            raw,
            budget: None,
            blocks: Vec::new(),
            vacant: Vec::new(),
            free: [BTreeSet::new(), BTreeSet::new()],
            stats: MemoryStats::default(),
            tag: Tag::default(),
            step: 0,
            trace: None,
            fail_in: None,
        }
    }

    /// Fault injection for tests: the `n`-th allocation from now (0: the next)
    /// fails with `OutOfMemory` as if the device were full.
    pub fn fail_allocation_in(&mut self, n: u64) {
        self.fail_in = Some(n);
    }

    /// An allocator over `raw` that reserves at most `budget` bytes (`None`:
    /// only the device limits it).
    pub fn with_budget(raw: R, budget: Option<u64>) -> Self {
        let mut a = Self::new(raw);
        a.budget = budget;
        a
    }

    /// Sets the most bytes the allocator may reserve. Cached segments are
    /// released first so a lowered budget takes effect where it can.
    pub fn set_budget(&mut self, budget: Option<u64>) {
        self.budget = budget;
        if budget.is_some_and(|b| self.stats.reserved_bytes > b) {
            self.empty_cache();
        }
    }

    /// The cap on reserved bytes; `None` when there is none.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }
    /// The raw memory underneath (for the device's total and free bytes).
    pub fn raw(&self) -> &R {
        &self.raw
    }
    /// The raw memory underneath, mutably.
    pub fn raw_mut(&mut self) -> &mut R {
        &mut self.raw
    }
    /// The counters as they are now.
    pub fn stats(&self) -> MemoryStats {
        self.stats
    }

    /// Tags the allocations and frees that follow (for the timeline).
    pub fn set_tag(&mut self, tag: Tag) {
        self.tag = tag;
    }
    /// Sets the training step recorded in the events that follow.
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }
    /// Starts recording a timeline of every event.
    pub fn start_trace(&mut self) {
        self.trace = Some(Vec::new());
    }
    /// Stops recording and returns the events since [`start_trace`]; `None`
    /// when no trace was being recorded.
    ///
    /// [`start_trace`]: CachingAllocator::start_trace
    pub fn take_trace(&mut self) -> Option<Vec<Event>> {
        self.trace.take()
    }

    /// Starts a new high-water mark: both peaks drop to the current allocated
    /// and reserved bytes (as `torch.cuda.reset_peak_memory_stats`).
    pub fn reset_peak_stats(&mut self) {
        self.stats.peak_allocated_bytes = self.stats.allocated_bytes;
        self.stats.peak_reserved_bytes = self.stats.reserved_bytes;
    }

    fn record(&mut self, kind: EventKind, addr: u64, bytes: u64) {
        if let Some(t) = &mut self.trace {
            t.push(Event {
                kind,
                addr,
                bytes,
                phase: self.tag.phase,
                op: self.tag.op.to_string(),
                tensor: self.tag.tensor,
                value: self.tag.value,
                step: self.step,
                allocated: self.stats.allocated_bytes,
                reserved: self.stats.reserved_bytes,
            });
        }
    }

    fn key(&self, id: usize) -> FreeKey {
        let b = &self.blocks[id];
        (b.size, b.seg, b.offset, id)
    }

    fn new_slot(&mut self, info: Info) -> usize {
        match self.vacant.pop() {
            Some(i) => {
                self.blocks[i] = info;
                i
            }
            None => {
                self.blocks.push(info);
                self.blocks.len() - 1
            }
        }
    }

    /// Asks the device for a segment, within the budget.
    fn new_segment(&mut self, bytes: u64, pool: Pool) -> Option<usize> {
        if self
            .budget
            .is_some_and(|b| self.stats.reserved_bytes + bytes > b)
        {
            return None;
        }
        let seg = self.raw.alloc(bytes).ok()?;
        self.stats.reserved_bytes += seg.bytes;
        self.stats.peak_reserved_bytes = self
            .stats
            .peak_reserved_bytes
            .max(self.stats.reserved_bytes);
        self.stats.num_segment_allocs += 1;
        self.record(EventKind::SegmentAlloc, seg.handle, seg.bytes);
        let order = self.stats.num_segment_allocs;
        Some(self.new_slot(Info {
            handle: seg.handle,
            seg: order,
            offset: 0,
            size: seg.bytes,
            requested: 0,
            allocated: false,
            pool,
            prev: None,
            next: None,
        }))
    }

    /// Returns every cached segment that holds no tensor to the device.
    pub fn empty_cache(&mut self) {
        for p in 0..2 {
            let whole: Vec<FreeKey> = self.free[p]
                .iter()
                .filter(|k| {
                    let b = &self.blocks[k.3];
                    b.prev.is_none() && b.next.is_none()
                })
                .copied()
                .collect();
            for k in whole {
                self.free[p].remove(&k);
                let b = self.blocks[k.3].clone();
                self.raw.free(Segment {
                    handle: b.handle,
                    bytes: b.size,
                });
                self.stats.reserved_bytes -= b.size;
                self.stats.num_segment_frees += 1;
                self.record(EventKind::SegmentFree, b.handle, b.size);
                self.vacant.push(k.3);
            }
        }
    }

    /// Hands out a block of at least [`round_size`]`(bytes)` bytes: the
    /// best-fitting cached free block of the request's pool, else a new segment
    /// within the budget, emptying the cache and retrying once if the device or
    /// the budget refuses. The block is split to the rounded size when the rest
    /// is worth keeping (any rest in the small pool, more than [`SMALL_SIZE`]
    /// in the large); otherwise the whole block is handed out and counted as
    /// allocated. Fails with
    /// [`Error::OutOfMemory`] (counted in `num_ooms`) when nothing fits, or
    /// when [`fail_allocation_in`] injected a failure.
    ///
    /// [`fail_allocation_in`]: CachingAllocator::fail_allocation_in
    pub fn alloc(&mut self, bytes: u64) -> Result<Block> {
        match self.fail_in {
            Some(0) => {
                self.fail_in = None;
                self.stats.num_ooms += 1;
                return Err(self.oom(bytes));
            }
            Some(n) => self.fail_in = Some(n - 1),
            None => {}
        }
        let size = round_size(bytes);
        let pool = pool_of(size);
        let pi = pool as usize;
        let found = self.free[pi].range((size, 0, 0, 0)..).next().copied();
        let id = match found {
            Some(k) => {
                self.free[pi].remove(&k);
                k.3
            }
            None => self.grow(size, pool, bytes)?,
        };
        let rest = self.blocks[id].size - size;
        if should_split(pool, rest) {
            let b = self.blocks[id].clone();
            let r = self.new_slot(Info {
                handle: b.handle,
                seg: b.seg,
                offset: b.offset + size,
                size: rest,
                requested: 0,
                allocated: false,
                pool,
                prev: Some(id),
                next: b.next,
            });
            if let Some(n) = b.next {
                self.blocks[n].prev = Some(r);
            }
            let blk = &mut self.blocks[id];
            blk.next = Some(r);
            blk.size = size;
            let k = self.key(r);
            self.free[pi].insert(k);
        }
        let blk = &mut self.blocks[id];
        blk.allocated = true;
        blk.requested = bytes;
        let (handle, offset, bsize) = (blk.handle, blk.offset, blk.size);
        let s = &mut self.stats;
        s.allocated_bytes += bsize;
        s.requested_bytes += bytes;
        s.peak_allocated_bytes = s.peak_allocated_bytes.max(s.allocated_bytes);
        s.num_allocs += 1;
        self.record(EventKind::Alloc, handle + offset, bsize);
        Ok(Block {
            handle,
            offset,
            bytes: bsize,
            slot: id as u32,
        })
    }

    /// A new segment for a request of `size`: flush the cache and retry once if
    /// the device (or the budget) refuses.
    fn grow(&mut self, size: u64, pool: Pool, requested: u64) -> Result<usize> {
        let seg = segment_size(size);
        if let Some(id) = self.new_segment(seg, pool) {
            return Ok(id);
        }
        self.stats.num_alloc_retries += 1;
        self.empty_cache();
        if let Some(id) = self.new_segment(seg, pool) {
            return Ok(id);
        }
        let exact = size.div_ceil(ROUND_LARGE) * ROUND_LARGE;
        if pool == Pool::Large && exact < seg {
            if let Some(id) = self.new_segment(exact, pool) {
                return Ok(id);
            }
        }
        self.stats.num_ooms += 1;
        Err(self.oom(requested))
    }

    fn oom(&self, requested: u64) -> Error {
        Error::OutOfMemory {
            requested,
            allocated: self.stats.allocated_bytes,
            reserved: self.stats.reserved_bytes,
            budget: self.budget,
            device_free: self.raw.free_bytes(),
        }
    }

    /// Returns a block to the cache (its segment stays reserved) and merges it
    /// with free neighbours in the same segment. Freeing a block that is not
    /// allocated (a double free) panics in debug builds and is logged and
    /// ignored in release builds.
    pub fn free(&mut self, b: Block) {
        let id = b.slot as usize;
        let ok = self
            .blocks
            .get(id)
            .is_some_and(|i| i.allocated && i.handle == b.handle && i.offset == b.offset);
        if !ok {
            // Freeing a block twice is a bug in headroom; losing track of memory
            // is worse than refusing, so refuse loudly in debug builds.
            debug_assert!(false, "free of a block that is not allocated: {b:?}");
            log::error!("free of a block that is not allocated: {b:?}");
            return;
        }
        let (size, requested, pool) = {
            let i = &mut self.blocks[id];
            i.allocated = false;
            let r = i.requested;
            i.requested = 0;
            (i.size, r, i.pool)
        };
        self.stats.allocated_bytes -= size;
        self.stats.requested_bytes -= requested;
        self.stats.num_frees += 1;
        self.record(EventKind::Free, b.handle + b.offset, size);
        let pi = pool as usize;
        let mut id = id;
        // Merge with a free previous neighbour: it absorbs this block.
        if let Some(p) = self.blocks[id].prev.filter(|&p| !self.blocks[p].allocated) {
            let k = self.key(p);
            self.free[pi].remove(&k);
            let cur = self.blocks[id].clone();
            let pb = &mut self.blocks[p];
            pb.size += cur.size;
            pb.next = cur.next;
            if let Some(n) = cur.next {
                self.blocks[n].prev = Some(p);
            }
            self.vacant.push(id);
            id = p;
        }
        // Merge with a free next neighbour: this block absorbs it.
        if let Some(n) = self.blocks[id].next.filter(|&n| !self.blocks[n].allocated) {
            let k = self.key(n);
            self.free[pi].remove(&k);
            let nb = self.blocks[n].clone();
            let cur = &mut self.blocks[id];
            cur.size += nb.size;
            cur.next = nb.next;
            if let Some(nn) = nb.next {
                self.blocks[nn].prev = Some(id);
            }
            self.vacant.push(n);
        }
        let k = self.key(id);
        self.free[pi].insert(k);
    }
}

impl<R: RawMemory> Drop for CachingAllocator<R> {
    fn drop(&mut self) {
        // Give every segment back: walk each segment from its first block.
        let vacant: std::collections::HashSet<usize> = self.vacant.iter().copied().collect();
        let heads: Vec<usize> = (0..self.blocks.len())
            .filter(|i| !vacant.contains(i) && self.blocks[*i].prev.is_none())
            .collect();
        for h in heads {
            let mut total = 0;
            let mut cur = Some(h);
            while let Some(c) = cur {
                total += self.blocks[c].size;
                cur = self.blocks[c].next;
            }
            let handle = self.blocks[h].handle;
            self.raw.free(Segment {
                handle,
                bytes: total,
            });
        }
    }
}
