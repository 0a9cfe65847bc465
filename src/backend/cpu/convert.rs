//! f32 ⇄ f16/bf16 storage conversions for the f32 kernels, in blocks.
//!
//! The generic path widens through f64 one element at a time; with bf16
//! storage that was ~40% of a step. These convert a block at a time with the
//! `half` crate's slice conversions for f16 (F16C where the CPU has it) and
//! vectorised bit operations for bf16, and split large tensors across threads. They give the same bits as the f64 path: an f32 is
//! exact in f64, so rounding it to f16/bf16 from either is the same rounding
//! (nearest-even), and widening is exact both ways.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use super::simd::wide;
use crate::error::Result;
use crate::tensor::{load_f64, store_f64, DType};

/// Elements per thread's block: conversions are memory-bound, so only large
/// tensors are worth waking the other threads for.
const BLOCK: usize = 1 << 19;

/// `bytes` (stored as `dtype`) widened to f32.
pub fn to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    let mut out = super::scratch::take(bytes.len() / dtype.size_in_bytes().max(1));
    if !to_f32_into(dtype, bytes, &mut out) {
        super::scratch::give(out);
        // Unaligned low-precision bytes, or ids and f64: the exact general path.
        return load_f64(dtype, bytes)
            .into_iter()
            .map(|x| x as f32)
            .collect();
    }
    out
}

/// `bytes` (f32, f16 or bf16, aligned, as many elements as `out`) widened
/// into `out`; false (and `out` untouched) for anything else.
pub fn to_f32_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> bool {
    if bytes.len() != out.len() * dtype.size_in_bytes() {
        return false;
    }
    match dtype {
        DType::BF16 => widen::<bf16>(bytes, out),
        DType::F16 => widen::<f16>(bytes, out),
        DType::F32 => match bytemuck::try_cast_slice(bytes) {
            Ok(src) => {
                out.copy_from_slice(src);
                true
            }
            Err(_) => false,
        },
        _ => false,
    }
}

/// `src` rounded to nearest-even into `out`, stored as `dtype`.
pub fn from_f32(src: &[f32], dtype: DType, out: &mut [u8]) -> Result<()> {
    if out.len() == src.len() * dtype.size_in_bytes() {
        let done = match dtype {
            DType::BF16 => narrow::<bf16>(src, out),
            DType::F16 => narrow::<f16>(src, out),
            DType::F32 => {
                out.copy_from_slice(bytemuck::cast_slice(src));
                true
            }
            _ => false,
        };
        if done {
            return Ok(());
        }
    }
    let wide: Vec<f64> = src.iter().map(|&x| x as f64).collect();
    store_f64(dtype, &wide, out)
}

/// Widening and rounding one block, as fast as this CPU allows: bf16 by the
/// bit operations below, compiled for AVX2 where present; f16 by `half`, which
/// uses the CPU's F16C instructions where present.
trait Half: bytemuck::Pod + Send + Sync {
    fn widen_block(src: &[Self], out: &mut [f32]);
    fn narrow_block(src: &[f32], out: &mut [Self]);
}

impl Half for bf16 {
    fn widen_block(src: &[bf16], out: &mut [f32]) {
        wide(
            #[inline(always)]
            || {
                for (o, &h) in out.iter_mut().zip(src) {
                    *o = f32::from_bits((h.to_bits() as u32) << 16);
                }
            },
        )
    }
    fn narrow_block(src: &[f32], out: &mut [bf16]) {
        wide(
            #[inline(always)]
            || {
                for (o, &x) in out.iter_mut().zip(src) {
                    let b = x.to_bits();
                    // Nearest-even: add just under half an ulp of bf16, plus
                    // the kept lsb, and truncate. NaNs stay quiet NaNs.
                    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
                    let bits = if x.is_nan() { (b >> 16) | 0x40 } else { r };
                    *o = bf16::from_bits(bits as u16);
                }
            },
        )
    }
}

impl Half for f16 {
    fn widen_block(src: &[f16], out: &mut [f32]) {
        src.convert_to_f32_slice(out)
    }
    fn narrow_block(src: &[f32], out: &mut [f16]) {
        out.convert_from_f32_slice(src)
    }
}

/// Aligned `bytes` of `H` widened into `out`; false if they are not aligned.
fn widen<H: Half>(bytes: &[u8], out: &mut [f32]) -> bool {
    let Ok(src) = bytemuck::try_cast_slice::<u8, H>(bytes) else {
        return false;
    };
    in_blocks(src, out, H::widen_block);
    true
}

/// `src` rounded into aligned `bytes` of `H`; false if they are not aligned.
fn narrow<H: Half>(src: &[f32], bytes: &mut [u8]) -> bool {
    let Ok(dst) = bytemuck::try_cast_slice_mut::<u8, H>(bytes) else {
        return false;
    };
    in_blocks(src, dst, H::narrow_block);
    true
}

/// `f(src block, dst block)` over [`BLOCK`]-sized blocks on every thread for
/// large tensors, or once over the whole on this one.
fn in_blocks<S: Sync, D: Send>(src: &[S], dst: &mut [D], f: fn(&[S], &mut [D])) {
    if dst.len() >= 2 * BLOCK {
        dst.par_chunks_mut(BLOCK)
            .zip(src.par_chunks(BLOCK))
            .for_each(|(d, s)| f(s, d));
    } else {
        f(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bf16 and f16 bit pattern, and f32s around each rounding boundary,
    /// give the bits of the f64 path both ways.
    #[test]
    fn blocked_conversions_match_the_f64_path() {
        for dtype in [DType::BF16, DType::F16] {
            let bits: Vec<u16> = (0..=u16::MAX).collect();
            let bytes: &[u8] = bytemuck::cast_slice(&bits);
            let fast = to_f32(dtype, bytes);
            let slow: Vec<f32> = load_f64(dtype, bytes).iter().map(|&x| x as f32).collect();
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{dtype} {i:#x}"
                );
            }
            // f32s spread over every exponent, with low mantissa bits set so
            // that ties and near-ties are exercised.
            let src: Vec<f32> = (0..200_000u32)
                .map(|i| f32::from_bits(i.wrapping_mul(21_475)))
                .filter(|x| !x.is_nan())
                .collect();
            let width = dtype.size_in_bytes();
            let (mut a, mut b) = (vec![0u8; src.len() * width], vec![0u8; src.len() * width]);
            from_f32(&src, dtype, &mut a).unwrap();
            let wide: Vec<f64> = src.iter().map(|&x| x as f64).collect();
            store_f64(dtype, &wide, &mut b).unwrap();
            for (i, x) in src.iter().enumerate() {
                let (p, q) = (
                    &a[i * width..(i + 1) * width],
                    &b[i * width..(i + 1) * width],
                );
                assert_eq!(p, q, "{dtype} {x:e} bits {:#x}", x.to_bits());
            }
        }
    }
}
