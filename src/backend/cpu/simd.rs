//! Kernel loops compiled for AVX2 where the CPU has it, chosen at run time.
//!
//! A default x86-64 build targets SSE2, so LLVM vectorises the kernels' loops
//! four f32 lanes wide; nearly every x86 CPU sold since 2013 runs eight.
//! PyTorch picks its kernels per CPU at run time; so do these, with no
//! `-C target-cpu` that would make the binary crash on an older machine.
//! Only vector width changes: Rust never fuses `a * b + c` into an FMA
//! unasked, so both forms compute the same operations, and the same bits.

/// Runs `body`, compiled for AVX2 and FMA when this CPU has them.
///
/// `body` is inlined into a function with those target features, so its
/// loops, and the `#[inline]` helpers they call, are vectorised for them. Put
/// it around a serial inner loop (one row, one chunk): a rayon task started
/// inside `body` runs code compiled without them.
#[inline(always)]
pub fn wide<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { avx2(body) };
        }
    }
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}
