//! Alloc/free throughput of the caching allocator (over real host memory) against
//! the system allocator, on the same request stream: sizes from 512 B to 8 MiB,
//! freed in a mixed order as a training step does. Prints one table.
//!
//! cargo bench --bench alloc

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::time::Instant;

use headroom::backend::cpu::CpuMemory;
use headroom::memory::{Block, CachingAllocator};
use headroom::rng::Rng;

const LIVE: usize = 256;
const OPS: usize = 400_000;

/// The request stream: (size, which live slot to replace).
fn stream() -> Vec<(u64, usize)> {
    let mut rng = Rng::new(42);
    (0..OPS)
        .map(|_| {
            // Log-uniform sizes: many small activations, some large ones.
            let exp = 9.0 + rng.uniform() * 14.0; // 2^9 .. 2^23 bytes
            (2f64.powf(exp) as u64, rng.below(LIVE))
        })
        .collect()
}

fn caching(reqs: &[(u64, usize)]) -> f64 {
    let mut a = CachingAllocator::new(CpuMemory::default());
    let mut live: Vec<Option<Block>> = vec![None; LIVE];
    let t = Instant::now();
    for &(n, slot) in reqs {
        if let Some(b) = live[slot].take() {
            a.free(b);
        }
        live[slot] = Some(black_box(a.alloc(n).expect("host memory")));
    }
    for b in live.into_iter().flatten() {
        a.free(b);
    }
    t.elapsed().as_secs_f64()
}

fn system(reqs: &[(u64, usize)]) -> f64 {
    let mut live: Vec<Option<(*mut u8, Layout)>> = vec![None; LIVE];
    let t = Instant::now();
    for &(n, slot) in reqs {
        if let Some((p, l)) = live[slot].take() {
            unsafe { dealloc(p, l) };
        }
        let l = Layout::from_size_align(n as usize, 64).unwrap();
        let p = unsafe { alloc(l) };
        assert!(!p.is_null());
        live[slot] = Some((black_box(p), l));
    }
    for (p, l) in live.into_iter().flatten() {
        unsafe { dealloc(p, l) };
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    let reqs = stream();
    // Best of five: the least disturbed run of each.
    let best =
        |f: fn(&[(u64, usize)]) -> f64| (0..5).map(|_| f(&reqs)).fold(f64::INFINITY, f64::min);
    let c = best(caching);
    let s = best(system);
    let per = |t: f64| t * 1e9 / (2 * OPS) as f64;
    println!("alloc/free throughput, {OPS} allocs + {OPS} frees, {LIVE} live, 512 B – 8 MiB");
    println!("| allocator | ns per op | Mops/s |");
    println!("|---|---|---|");
    println!(
        "| headroom CachingAllocator (host memory) | {:.1} | {:.2} |",
        per(c),
        1e3 / per(c)
    );
    println!(
        "| system allocator (malloc/free) | {:.1} | {:.2} |",
        per(s),
        1e3 / per(s)
    );
    println!(
        "caching / system time ratio: {:.2} (below 1: caching is faster)",
        c / s
    );
}
