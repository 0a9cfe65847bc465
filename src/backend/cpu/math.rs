//! `exp` for the f32 kernels, written so that a loop of it compiles to SIMD.
//!
//! glibc's `expf`/`tanhf` are calls LLVM cannot vectorise, and they were over a
//! quarter of a tiny training step (GELU, softmax, attention). This one has no
//! branches and no calls: range reduction `x = n·ln2 + r` with `|r| ≤ ln2/2`,
//! a degree-7 Taylor polynomial for `e^r` (truncation below 6e-9 relative), and
//! `2^n` built from exponent bits. Its error is at most 2 ulp against the exact
//! value (the test sweeps every 61st f32 of the finite range); glibc's is under
//! 1 ulp, so results move in their last bits, not more. f64 kernels (the
//! gradient checks) keep `f64::exp`.

/// `e^x` in f32: ≤ 2 ulp from exact, `0` below −103.97, `inf` above 88.72, NaN
/// for NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts: `n · LN2_HI` is exact for the |n| ≤ 150 used here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to an integer (nearest-even) in the low mantissa
    // bits: SSE2 has no vector round, this is two adds.
    const ROUND: f32 = 12_582_912.0;
    // Past these e^x is 0 or inf in f32; the clamp keeps `n` in [−150, 129].
    // `clamp` passes NaN through, and NaN flows to the result.
    let x = x.clamp(-104.0, 89.0);
    let t = x * LOG2E + ROUND;
    let n = (t.to_bits() as i32) - (ROUND.to_bits() as i32);
    let nf = t - ROUND;
    let r = (x - nf * LN2_HI) - nf * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n as two normal powers of two, so that results near the bottom of the
    // range come out subnormal (one rounding, in the last multiply) instead of
    // needing a subnormal scale.
    let n1 = n >> 1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - n1 + 127) as u32) << 23);
    p * s1 * s2
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    /// Distance in units of the last place of `exact` (as an f32).
    fn ulps(got: f32, exact: f64) -> f64 {
        let e = exact as f32;
        if got == e {
            return 0.0;
        }
        let ulp = if e == 0.0 {
            f32::from_bits(1) as f64
        } else {
            (f32::from_bits(e.abs().to_bits() + 1) - e.abs()) as f64
        };
        (got as f64 - exact).abs() / ulp
    }

    #[test]
    fn within_two_ulp_over_the_finite_range() {
        let mut worst = (0.0f64, 0.0f32);
        // Every 61st bit pattern of [−104, 89]: both signs, all exponents.
        for bits in (0..=u32::MAX).step_by(61) {
            let x = f32::from_bits(bits);
            if !x.is_finite() || !(-104.0..=89.0).contains(&x) {
                continue;
            }
            let exact = (x as f64).exp();
            if exact < f32::MIN_POSITIVE as f64 {
                // Subnormal results: compare absolutely (the ulp is fixed there).
                let d = (exp_f32(x) as f64 - exact).abs() / f32::from_bits(1) as f64;
                assert!(
                    d <= 1.0,
                    "exp_f32({x:e}) = {:e}, exact {exact:e}",
                    exp_f32(x)
                );
                continue;
            }
            let u = ulps(exp_f32(x), exact);
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 2.0, "{} ulp at {:e}", worst.0, worst.1);
    }

    #[test]
    fn special_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(88.7).is_finite());
        assert!(exp_f32(-103.0) > 0.0);
    }
}
