//! Static shapes and host-side tensors (and, re-exported, their dtypes).

use std::fmt;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

pub use crate::dtype::DType;
use crate::error::{Error, Result};

/// A static shape; the empty shape is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// A shape with the given dims, outermost first.
    pub fn new(dims: &[usize]) -> Shape {
        Shape(dims.to_vec())
    }
    /// The rank-0 shape of a scalar (one element).
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }
    /// The dims, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of dims (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements: the product of the dims (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// Size of the last dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }
    /// Product of all dimensions but the last: the number of rows.
    pub fn rows(&self) -> usize {
        self.numel() / self.last().max(1)
    }
    /// Bytes a dense tensor of this shape takes in `dtype`.
    pub fn byte_size(&self, dtype: DType) -> u64 {
        (self.numel() * dtype.size_in_bytes()) as u64
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

/// A tensor in host memory, stored as its dtype's bytes in native order
/// (little-endian on every target headroom supports).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Static shape.
    pub shape: Shape,
    /// Element type.
    pub dtype: DType,
    /// The elements in row-major order: `shape.numel() * dtype.size_in_bytes()` bytes.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// A tensor of `shape` and `dtype` whose bytes are all zero (0 in every dtype).
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> HostTensor {
        let shape = shape.into();
        let n = shape.byte_size(dtype) as usize;
        HostTensor {
            shape,
            dtype,
            data: vec![0; n],
        }
    }

    /// An f32 tensor holding `v` in row-major order; [`Error::Shape`] if `v` does
    /// not have exactly `shape`'s element count.
    pub fn from_f32(shape: impl Into<Shape>, v: &[f32]) -> Result<HostTensor> {
        Self::from_f64_as(
            shape,
            &v.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            DType::F32,
        )
    }

    /// An i32 tensor (token ids) holding `v` in row-major order; [`Error::Shape`] if
    /// `v` does not have exactly `shape`'s element count.
    pub fn from_i32(shape: impl Into<Shape>, v: &[i32]) -> Result<HostTensor> {
        let shape = shape.into();
        check_len(&shape, v.len())?;
        Ok(HostTensor {
            shape,
            dtype: DType::I32,
            data: bytemuck::cast_slice(v).to_vec(),
        })
    }

    /// Builds a float tensor of `dtype`, rounding each value to nearest-even as a
    /// device store would.
    pub fn from_f64_as(shape: impl Into<Shape>, v: &[f64], dtype: DType) -> Result<HostTensor> {
        let shape = shape.into();
        check_len(&shape, v.len())?;
        let mut data = vec![0u8; shape.byte_size(dtype) as usize];
        store_f64(dtype, v, &mut data)?;
        Ok(HostTensor { shape, dtype, data })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// Values widened to f64 (exact for every float dtype and for i32).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        load_f64(self.dtype, &self.data)
    }

    /// Values converted to f32 (f64 values rounded to nearest).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.to_f64_vec().into_iter().map(|x| x as f32).collect()
    }

    /// The ids of an i32 tensor; [`Error::DType`] for any other dtype.
    pub fn to_i32_vec(&self) -> Result<Vec<i32>> {
        if self.dtype != DType::I32 {
            return Err(Error::dtype("to_i32_vec", "i32", self.dtype));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.data))
    }
}

fn check_len(shape: &Shape, n: usize) -> Result<()> {
    if shape.numel() != n {
        return Err(Error::shape(
            "tensor",
            format!("{n} values do not fill shape {shape}"),
        ));
    }
    Ok(())
}

/// Reads `bytes` of `dtype` as f64.
pub fn load_f64(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(bytes)
            .into_iter()
            .map(|x| x as f64)
            .collect(),
        DType::F64 => bytemuck::pod_collect_to_vec(bytes),
        DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(bytes)
            .into_iter()
            .map(|x| x.to_f64())
            .collect(),
        DType::BF16 => bytemuck::pod_collect_to_vec::<u8, bf16>(bytes)
            .into_iter()
            .map(|x| x.to_f64())
            .collect(),
        DType::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(bytes)
            .into_iter()
            .map(|x| x as f64)
            .collect(),
        DType::U8 => bytes.iter().map(|&x| x as f64).collect(),
    }
}

/// Writes `v` into `out` as `dtype`, rounding to nearest-even.
pub fn store_f64(dtype: DType, v: &[f64], out: &mut [u8]) -> Result<()> {
    let width = dtype.size_in_bytes();
    if out.len() != v.len() * width {
        return Err(Error::Internal(format!(
            "store: {} values of {dtype} need {} bytes, the buffer has {}",
            v.len(),
            v.len() * width,
            out.len()
        )));
    }
    // Element by element in native byte order (as `load_f64` reads): no
    // alignment needed of `out`, which a Vec<u8> does not guarantee.
    let chunks = out.chunks_exact_mut(width).zip(v);
    match dtype {
        DType::F32 => chunks.for_each(|(o, &x)| o.copy_from_slice(&(x as f32).to_ne_bytes())),
        DType::F64 => chunks.for_each(|(o, &x)| o.copy_from_slice(&x.to_ne_bytes())),
        DType::F16 => chunks.for_each(|(o, &x)| {
            o.copy_from_slice(&f16::from_f32(f32_round_to_odd(x)).to_ne_bytes())
        }),
        DType::BF16 => chunks.for_each(|(o, &x)| {
            o.copy_from_slice(&bf16::from_f32(f32_round_to_odd(x)).to_ne_bytes())
        }),
        DType::I32 | DType::U8 => return Err(Error::dtype("store", "a float dtype", dtype)),
    }
    Ok(())
}

/// `x` rounded to f32 by truncation with the last bit set when inexact
/// ("round to odd"). Rounding that to f16 or bf16 (nearest-even) gives the
/// correctly rounded result of `x`, because f32 keeps at least two more bits
/// than either. We do not use `half`'s `from_f64`: 2.7's bf16 version drops
/// the low 32 bits of the f64 mantissa before rounding, so an f32 just above
/// a tie (e.g. bits 0x09a0_8003) rounds down, and its f16 version rounds
/// twice (f64 → f32 → f16).
fn f32_round_to_odd(x: f64) -> f32 {
    let f = x as f32;
    if f as f64 == x || x.is_nan() {
        return f;
    }
    let mut bits = f.to_bits();
    if (f as f64).abs() > x.abs() {
        // Sign and magnitude: one step down in bits is one step towards zero
        // (from infinity, to the largest finite f32).
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(dtype: DType, x: f64) -> u16 {
        let mut out = [0u8; 2];
        store_f64(dtype, &[x], &mut out).unwrap();
        u16::from_ne_bytes(out)
    }

    /// Reference rounding by exact arithmetic on the two neighbours: nearest,
    /// ties to the even bit pattern.
    fn nearest(x: f64, candidates: &[(u16, f64)]) -> u16 {
        let mut best = candidates[0];
        for &c in candidates {
            let (d, e) = ((c.1 - x).abs(), (best.1 - x).abs());
            if d < e || (d == e && c.0 % 2 == 0) {
                best = c;
            }
        }
        best.0
    }

    /// Values just above and below halfway between neighbours, whose deciding
    /// bits lie anywhere in the f64 mantissa, round to the nearest value.
    #[test]
    fn stores_round_to_nearest_even_from_any_f64() {
        for dtype in [DType::BF16, DType::F16] {
            let value = |bits: u16| load_f64(dtype, &bits.to_ne_bytes())[0];
            for lo_bits in (0..0x7c00u16).step_by(37) {
                let hi_bits = lo_bits + 1;
                let (lo, hi) = (value(lo_bits), value(hi_bits));
                let mid = (lo + hi) / 2.0;
                // 1e-12 of a step still lies inside the f64 mantissa of `mid`.
                for nudge in [0.0, 1e-12, -1e-12, 1e-9, -1e-9, 0.25, -0.25] {
                    let x = mid + nudge * (hi - lo);
                    let want = nearest(x, &[(lo_bits, lo), (hi_bits, hi)]);
                    assert_eq!(
                        stored(dtype, x),
                        want,
                        "{dtype} {x:e} between {lo:e} and {hi:e}"
                    );
                    assert_eq!(stored(dtype, -x), want | 0x8000, "{dtype} {:e}", -x);
                }
            }
        }
    }

    #[test]
    fn stores_keep_special_values() {
        for dtype in [DType::BF16, DType::F16] {
            assert_eq!(stored(dtype, 0.0), 0);
            assert_eq!(stored(dtype, -0.0), 0x8000);
            let inf = if dtype == DType::BF16 { 0x7f80 } else { 0x7c00 };
            assert_eq!(stored(dtype, f64::INFINITY), inf);
            assert_eq!(stored(dtype, f64::NEG_INFINITY), inf | 0x8000);
            assert_eq!(stored(dtype, 1e300), inf, "overflow");
            assert_eq!(stored(dtype, 1e-300), 0, "underflow");
            let nan = load_f64(dtype, &stored(dtype, f64::NAN).to_ne_bytes())[0];
            assert!(nan.is_nan());
        }
    }
}
