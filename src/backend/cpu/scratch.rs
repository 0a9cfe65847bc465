//! Reused f32 buffers for the widened operands and outputs of ops on f16/bf16
//! storage.
//!
//! Every such op widens its operands into f32 and computes its outputs in f32
//! before rounding them back. Fresh zeroed vectors for those were a memset of
//! every operand and output, and a trip to the allocator, per op: about a
//! tenth of a bf16 step. Buffers come back here after the op and go out again
//! to the next one, their stale contents overwritten.

use std::cell::RefCell;

/// At most this many bytes of buffers are kept for reuse: the activations of
/// a small model, not a large model's logits, which go back to the allocator.
const KEEP_BYTES: usize = 64 << 20;
/// At most this many buffers: about as many operands and outputs as one op has.
const KEEP: usize = 8;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `n` f32s, reused where one is free: its contents are
/// unspecified (zeros or an earlier op's values), for a caller that writes
/// every element before reading it.
pub fn take(n: usize) -> Vec<f32> {
    let reused = POOL.with_borrow_mut(|pool| {
        // The smallest that fits, so large buffers stay for large tensors.
        let best = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= n)
            .min_by_key(|&i| pool[i].capacity())?;
        Some(pool.swap_remove(best))
    });
    let mut v = reused.unwrap_or_else(|| Vec::with_capacity(n));
    if v.len() >= n {
        v.truncate(n);
    } else {
        v.resize(n, 0.0);
    }
    v
}

/// Returns `v` for reuse, or frees it when the pool is full.
pub fn give(v: Vec<f32>) {
    let bytes = |v: &Vec<f32>| v.capacity() * std::mem::size_of::<f32>();
    POOL.with_borrow_mut(|pool| {
        let held: usize = pool.iter().map(bytes).sum();
        if pool.len() < KEEP && held + bytes(&v) <= KEEP_BYTES {
            pool.push(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let a = take(1000);
        assert_eq!(a.len(), 1000);
        let ptr = a.as_ptr();
        give(a);
        // A smaller request reuses the same allocation, at the asked length.
        let b = take(10);
        assert_eq!((b.len(), b.as_ptr()), (10, ptr));
        give(b);
        // A larger one grows it to the asked length.
        let c = take(5000);
        assert_eq!(c.len(), 5000);
        give(c);
        // Past the byte limit, buffers are freed, not kept.
        give(Vec::with_capacity(KEEP_BYTES));
        POOL.with_borrow(|p| assert!(p.iter().all(|v| v.capacity() < KEEP_BYTES)));
    }
}
