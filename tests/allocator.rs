//! The caching allocator: each PyTorch rule on its own, the retry-after-flush and
//! budget paths, and properties over random alloc/free sequences.

use headroom::memory::caching::{round_size, segment_size};
use headroom::memory::{Block, CachingAllocator, FaultyMemory, SimMemory};
use headroom::Error;
use proptest::prelude::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn sim() -> CachingAllocator<SimMemory> {
    CachingAllocator::new(SimMemory::new(64 << 30))
}

#[test]
fn requests_round_up_to_512_bytes() {
    assert_eq!(round_size(0), 512);
    assert_eq!(round_size(1), 512);
    assert_eq!(round_size(512), 512);
    assert_eq!(round_size(513), 1024);
    let mut a = sim();
    let b = a.alloc(700).unwrap();
    assert_eq!(b.bytes, 1024);
    assert_eq!(a.stats().allocated_bytes, 1024);
    assert_eq!(a.stats().requested_bytes, 700);
}

#[test]
fn pools_and_segment_sizes() {
    assert_eq!(segment_size(512), 2 * MIB);
    assert_eq!(segment_size(MIB), 2 * MIB);
    assert_eq!(segment_size(MIB + 512), 20 * MIB);
    assert_eq!(segment_size(10 * MIB - 512), 20 * MIB);
    assert_eq!(segment_size(10 * MIB), 10 * MIB);
    assert_eq!(segment_size(11 * MIB), 12 * MIB);
    let mut a = sim();
    a.alloc(1000).unwrap();
    assert_eq!(a.stats().reserved_bytes, 2 * MIB);
    a.alloc(11 * MIB).unwrap(); // its own 12 MiB segment, 1 MiB left: not split
    assert_eq!(a.stats().reserved_bytes, 14 * MIB);
    a.alloc(5 * MIB).unwrap(); // nothing cached fits: a 20 MiB segment
    assert_eq!(a.stats().reserved_bytes, 34 * MIB);
    assert_eq!(a.stats().num_segment_allocs, 3);
}

#[test]
fn small_blocks_share_a_segment() {
    let mut a = sim();
    let x = a.alloc(512).unwrap();
    let y = a.alloc(512).unwrap();
    assert_eq!(x.handle, y.handle);
    assert_eq!((x.offset, y.offset), (0, 512));
    assert_eq!(a.stats().num_segment_allocs, 1);
}

#[test]
fn large_blocks_split_only_when_more_than_1mib_remains() {
    let mut a = sim();
    let x = a.alloc(5 * MIB).unwrap(); // 20 MiB segment, 15 MiB left: split
    assert_eq!(x.bytes, 5 * MIB);
    let y = a.alloc(14 * MIB + 512 * KIB).unwrap(); // from the 15 MiB rest: 0.5 MiB left, no split
    assert_eq!(y.handle, x.handle);
    assert_eq!(y.bytes, 15 * MIB);
    assert_eq!(a.stats().allocated_bytes, 20 * MIB);
}

#[test]
fn best_fit_picks_the_smallest_block_that_fits() {
    let mut a = sim();
    let hold: Vec<Block> = (0..5).map(|_| a.alloc(4 * KIB).unwrap()).collect();
    // Free a 4 KiB hole and an 8 KiB hole (two neighbours merge).
    let mut hold = hold.into_iter();
    let b0 = hold.next().unwrap();
    let _k1 = hold.next().unwrap();
    let b2 = hold.next().unwrap();
    let b3 = hold.next().unwrap();
    let _k4 = hold.next().unwrap();
    let (hole4, hole8) = (b0.offset, b2.offset);
    a.free(b0);
    a.free(b2);
    a.free(b3);
    let c = a.alloc(3 * KIB).unwrap();
    assert_eq!(c.offset, hole4, "the 4 KiB hole fits best");
    let d = a.alloc(6 * KIB).unwrap();
    assert_eq!(d.offset, hole8, "the merged 8 KiB hole");
}

#[test]
fn freed_neighbours_merge_back_into_whole_segments() {
    let mut a = sim();
    let x = a.alloc(100 * KIB).unwrap();
    let y = a.alloc(100 * KIB).unwrap();
    let z = a.alloc(100 * KIB).unwrap();
    a.free(x);
    a.free(z);
    a.free(y); // merges with both sides
    assert_eq!(a.stats().allocated_bytes, 0);
    a.empty_cache();
    assert_eq!(
        a.stats().reserved_bytes,
        0,
        "one whole free segment, released"
    );
    assert_eq!(a.raw().used(), 0);
}

#[test]
fn failed_device_allocation_flushes_the_cache_and_retries_once() {
    let (raw, faults) = FaultyMemory::new(SimMemory::new(1 << 30));
    let mut a = CachingAllocator::new(raw);
    let small = a.alloc(1000).unwrap();
    a.free(small); // a cached 2 MiB segment nobody uses
    faults.borrow_mut().script.push_back(true); // the next device allocation fails
    let big = a.alloc(5 * MIB).unwrap();
    let s = a.stats();
    assert_eq!(s.num_alloc_retries, 1);
    assert_eq!(
        s.num_segment_frees, 1,
        "the cached segment was released before the retry"
    );
    assert_eq!(s.reserved_bytes, 20 * MIB);
    assert_eq!(faults.borrow().attempts, 3);
    a.free(big);
}

#[test]
fn a_device_that_stays_full_gives_a_typed_out_of_memory() {
    let (raw, faults) = FaultyMemory::new(SimMemory::new(1 << 30));
    let mut a = CachingAllocator::new(raw);
    faults.borrow_mut().capacity = Some(MIB);
    let e = a.alloc(3 * MIB).unwrap_err();
    match &e {
        Error::OutOfMemory { requested, .. } => assert_eq!(*requested, 3 * MIB),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert!(e.to_string().contains("tried to allocate 3.00 MiB"), "{e}");
    assert_eq!(a.stats().num_ooms, 1);
    assert_eq!(a.stats().num_alloc_retries, 1);
}

#[test]
fn the_budget_is_enforced_before_the_device_is_asked() {
    let mut a = CachingAllocator::with_budget(SimMemory::new(1 << 30), Some(4 * MIB));
    // 1 MiB requests are small-pool: two per 2 MiB segment.
    let _held: Vec<Block> = (0..4).map(|_| a.alloc(MIB).unwrap()).collect();
    assert_eq!(a.stats().reserved_bytes, 4 * MIB);
    let e = a.alloc(MIB).unwrap_err();
    assert!(e.to_string().contains("budget 4.00 MiB"), "{e}");
    assert!(a.stats().reserved_bytes <= 4 * MIB);
    assert_eq!(a.raw().used(), 4 * MIB);
}

#[test]
fn a_large_request_near_the_budget_gets_a_segment_of_its_own_size() {
    let mut a = CachingAllocator::with_budget(SimMemory::new(1 << 30), Some(16 * MIB));
    let x = a.alloc(3 * MIB).unwrap(); // 20 MiB would break the budget: 4 MiB instead
    assert_eq!(a.stats().reserved_bytes, 4 * MIB);
    a.free(x);
}

#[test]
fn reset_peak_stats_starts_a_new_high_water_mark() {
    let mut a = sim();
    let x = a.alloc(MIB).unwrap();
    a.free(x);
    assert_eq!(a.stats().peak_allocated_bytes, MIB);
    a.reset_peak_stats();
    assert_eq!(a.stats().peak_allocated_bytes, 0);
    assert_eq!(a.stats().peak_reserved_bytes, 2 * MIB);
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(u64),
    Free(usize),
    EmptyCache,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Sizes across all three pools, weighted to the small ones.
        4 => (1u64..64 * 1024).prop_map(Op::Alloc),
        2 => (64 * 1024u64..3 * MIB).prop_map(Op::Alloc),
        1 => (3 * MIB..24 * MIB).prop_map(Op::Alloc),
        5 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::EmptyCache),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_sequences_keep_every_invariant(ops in prop::collection::vec(op(), 1..200), budget_mib in 8u64..200) {
        let budget = budget_mib * MIB;
        let mut a = CachingAllocator::with_budget(SimMemory::new(1 << 34), Some(budget));
        let mut live: Vec<(Block, u64)> = Vec::new();
        for o in &ops {
            match *o {
                Op::Alloc(n) => {
                    if let Ok(b) = a.alloc(n) {
                        prop_assert!(b.bytes >= n);
                        // No byte of the new block belongs to a live one.
                        for (l, _) in &live {
                            let disjoint = l.handle != b.handle
                                || l.offset + l.bytes <= b.offset
                                || b.offset + b.bytes <= l.offset;
                            prop_assert!(disjoint, "{b:?} overlaps {l:?}");
                        }
                        live.push((b, n));
                    }
                }
                Op::Free(i) if !live.is_empty() => {
                    let (b, _) = live.swap_remove(i % live.len());
                    a.free(b);
                }
                Op::Free(_) => {}
                Op::EmptyCache => a.empty_cache(),
            }
            let s = a.stats();
            prop_assert_eq!(s.allocated_bytes, live.iter().map(|(b, _)| b.bytes).sum::<u64>());
            prop_assert_eq!(s.requested_bytes, live.iter().map(|(_, n)| *n).sum::<u64>());
            prop_assert!(s.reserved_bytes <= budget);
            prop_assert!(s.allocated_bytes <= s.reserved_bytes);
            prop_assert_eq!(s.reserved_bytes, a.raw().used());
        }
        for (b, _) in live.drain(..) {
            a.free(b);
        }
        prop_assert_eq!(a.stats().allocated_bytes, 0);
        // Everything merged back into whole segments: the cache empties completely.
        a.empty_cache();
        prop_assert_eq!(a.stats().reserved_bytes, 0);
        prop_assert_eq!(a.raw().used(), 0);
    }

    #[test]
    fn freed_memory_is_reused_without_new_segments(sizes in prop::collection::vec(1u64..4 * MIB, 1..60)) {
        let mut a = sim();
        let first: Vec<Block> = sizes.iter().map(|&n| a.alloc(n).unwrap()).collect();
        let segments = a.stats().num_segment_allocs;
        for b in first {
            a.free(b);
        }
        let again: Vec<Block> = sizes.iter().map(|&n| a.alloc(n).unwrap()).collect();
        prop_assert_eq!(a.stats().num_segment_allocs, segments);
        for b in again {
            a.free(b);
        }
    }
}
