//! 8-bit AdamW state: each moment is one byte per element plus one f32 scale
//! per block of [`Q8_BLOCK`] elements, 8 bytes per parameter → about 2.
//!
//! A byte is an index into a code book of logarithmically spaced values,
//! scaled by its block's largest magnitude (block-wise dynamic quantisation,
//! as bitsandbytes' 8-bit Adam; our code book is our own). Log spacing keeps
//! the *relative* error of every element bounded, which is what Adam's
//! `m / √v` needs:
//! - `m` (signed): bit 7 the sign, bits 0–6 a magnitude `k`: 0 is zero, and
//!   `k ≥ 1` is `2^(−(127−k)·16/126)`, from 2⁻¹⁶ to 1 (neighbours 9.2% apart);
//! - `v` (non-negative): `k ≥ 1` is `2^(−(255−k)·40/254)`, from 2⁻⁴⁰ to 1
//!   (11.5% apart, 5.6% in `√v`). Its range is more than twice `m`'s in
//!   octaves because `v ≈ g²`: when `v` rounds to zero, `m` already has.
//!
//! Only the stored state is quantised: the update itself uses the moments
//! in f32, dequantised and advanced by this step's gradient, so `v` is never
//! zero where the gradient is not. Rounding is to the nearest code (ties
//! down), found by comparisons only, so every backend that computes the same
//! f32 moments writes the same bytes. Tensors under [`Q8_MIN_NUMEL`]
//! elements (biases, norms) keep f32 state, as bitsandbytes does: they are
//! few bytes and the most sensitive.
//!
//! The functions here are the reference every backend's kernel matches
//! (`cpu` runs them directly).

/// Elements per quantisation block: one scale per moment each.
pub const Q8_BLOCK: usize = 2048;
/// Tensors with fewer elements keep f32 moments.
pub const Q8_MIN_NUMEL: usize = 4096;
/// Magnitude codes of `m` (bit 7 is its sign).
pub const M_CODES: usize = 128;
/// Codes of `v`.
pub const V_CODES: usize = 256;
/// Octaves `m`'s codes span below the block's maximum.
const M_OCTAVES: f64 = 16.0;
/// Octaves `v`'s codes span below the block's maximum.
const V_OCTAVES: f64 = 40.0;
/// Length of the code book every kernel reads: `m`'s 128 magnitudes, then
/// `v`'s 256 values.
pub const CODEBOOK_LEN: usize = M_CODES + V_CODES;

/// Whether a parameter of `numel` elements gets 8-bit state.
pub fn quantised(numel: usize) -> bool {
    numel >= Q8_MIN_NUMEL
}

/// Blocks (and scales per moment) of a tensor of `numel` elements.
pub fn blocks(numel: usize) -> usize {
    numel.div_ceil(Q8_BLOCK)
}

/// The code book, `[CODEBOOK_LEN]` f32: `m`'s magnitudes at `0..128`, `v`'s
/// values at `128..384`, each ascending from 0 to exactly 1. Computed in f64
/// and rounded once, here, so no backend evaluates a power.
pub fn codebook() -> Vec<f32> {
    let span = |k: usize, n: usize, octaves: f64| -> f32 {
        match k {
            0 => 0.0,
            k if k == n - 1 => 1.0,
            k => (-((n - 1 - k) as f64) * octaves / (n - 2) as f64).exp2() as f32,
        }
    };
    let mut c: Vec<f32> = (0..M_CODES).map(|k| span(k, M_CODES, M_OCTAVES)).collect();
    c.extend((0..V_CODES).map(|k| span(k, V_CODES, V_OCTAVES)));
    c
}

/// The index of the code nearest `a` (≥ 0) in the ascending `codes` that
/// start at 0; ties go to the lower code. Comparisons only: a kernel doing
/// the same binary search picks the same index.
pub fn nearest(codes: &[f32], a: f32) -> usize {
    // The largest k with codes[k] <= a (codes[0] = 0 <= a).
    let (mut lo, mut hi) = (0usize, codes.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if codes[mid] <= a {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if lo + 1 < codes.len() && codes[lo + 1] - a < a - codes[lo] {
        lo + 1
    } else {
        lo
    }
}

/// The byte for `m / scale` (`scale` > 0): sign in bit 7, magnitude code below.
pub fn encode_m(book: &[f32], m: f32, scale: f32) -> u8 {
    let k = nearest(&book[..M_CODES], (m / scale).abs()) as u8;
    if k != 0 && m < 0.0 {
        k | 0x80
    } else {
        k
    }
}

/// The byte for `v / scale` (`scale` > 0).
pub fn encode_v(book: &[f32], v: f32, scale: f32) -> u8 {
    nearest(&book[M_CODES..], v / scale) as u8
}

/// `m` from its byte and its block's scale.
pub fn decode_m(book: &[f32], q: u8, scale: f32) -> f32 {
    let a = book[(q & 0x7f) as usize] * scale;
    if q & 0x80 != 0 {
        -a
    } else {
        a
    }
}

/// `v` from its byte and its block's scale.
pub fn decode_v(book: &[f32], q: u8, scale: f32) -> f32 {
    book[M_CODES + q as usize] * scale
}

/// One block's new state: the f32 moments `m`, `v` written as bytes into
/// `mq`, `vq`, with the block's scales (its largest |m| and largest v)
/// returned. An all-zero block has scale 0 and every byte 0.
pub fn encode_block(
    book: &[f32],
    m: &[f32],
    v: &[f32],
    mq: &mut [u8],
    vq: &mut [u8],
) -> (f32, f32) {
    let sm = m.iter().fold(0f32, |a, &x| a.max(x.abs()));
    let sv = v.iter().fold(0f32, |a, &x| a.max(x));
    for (q, &x) in mq.iter_mut().zip(m) {
        *q = if sm > 0.0 { encode_m(book, x, sm) } else { 0 };
    }
    for (q, &x) in vq.iter_mut().zip(v) {
        *q = if sv > 0.0 { encode_v(book, x, sv) } else { 0 };
    }
    (sm, sv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codebook_ascends_from_zero_to_one() {
        let c = codebook();
        assert_eq!(c.len(), CODEBOOK_LEN);
        for part in [&c[..M_CODES], &c[M_CODES..]] {
            assert_eq!(part[0], 0.0);
            assert_eq!(*part.last().unwrap(), 1.0);
            assert!(part.windows(2).all(|w| w[0] < w[1]));
        }
        // The smallest non-zero codes: 2^-16 for m, 2^-40 for v.
        assert!((c[1] as f64 / 2f64.powi(-16) - 1.0).abs() < 1e-6);
        assert!((c[M_CODES + 1] as f64 / 2f64.powi(-40) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn round_trip_error_is_bounded_relative() {
        let c = codebook();
        // Across 2^-12 .. 1 of the block max: relative error at most half a
        // code step (m: 2^(16/126) apart → ≤ 4.6%; v: 2^(40/254) → ≤ 5.7%).
        for i in 0..2000 {
            let x = (-(i as f64) * 12.0 / 2000.0).exp2() as f32;
            for s in [1.0f32, 3.5e-3] {
                let m = decode_m(&c, encode_m(&c, -x * s, s), s);
                assert!(
                    m < 0.0 && ((m / (-x * s)) - 1.0).abs() <= 0.046,
                    "m {x}: {m}"
                );
                let v = decode_v(&c, encode_v(&c, x * s, s), s);
                assert!(((v / (x * s)) - 1.0).abs() <= 0.057, "v {x}: {v}");
            }
        }
        // The block's largest element is exact.
        assert_eq!(decode_m(&c, encode_m(&c, -2.5, 2.5), 2.5), -2.5);
        assert_eq!(decode_v(&c, encode_v(&c, 7.0, 7.0), 7.0), 7.0);
    }

    #[test]
    fn nearest_breaks_ties_down_and_clamps() {
        let codes = [0.0f32, 1.0, 2.0];
        assert_eq!(nearest(&codes, 0.5), 0);
        assert_eq!(nearest(&codes, 0.51), 1);
        assert_eq!(nearest(&codes, 1.5), 1);
        assert_eq!(nearest(&codes, 9.0), 2);
        assert_eq!(nearest(&codes, 0.0), 0);
    }

    #[test]
    fn zero_blocks_and_negative_zero() {
        let c = codebook();
        let (mut mq, mut vq) = ([9u8; 4], [9u8; 4]);
        let (sm, sv) = encode_block(&c, &[0.0; 4], &[0.0; 4], &mut mq, &mut vq);
        assert_eq!((sm, sv, mq, vq), (0.0, 0.0, [0; 4], [0; 4]));
        // A value far below the smallest code is zero, never "negative zero".
        assert_eq!(encode_m(&c, -1e-30, 1.0), 0);
    }
}
