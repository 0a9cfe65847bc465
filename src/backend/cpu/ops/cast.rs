//! Casts between float dtypes on the cpu: f32 ⇄ f16/bf16 in blocks
//! ([`convert`]), anything else through f64; rounding is nearest-even either way.

use crate::backend::cpu::convert;
use crate::error::Result;
use crate::tensor::{load_f64, store_f64, DType};

/// `y` (stored as `to`) = `x` (stored as `from`), rounded to nearest-even.
pub fn cast_forward(from: DType, x: &[u8], to: DType, y: &mut [u8]) -> Result<()> {
    if from == DType::F32 {
        if let Ok(src) = bytemuck::try_cast_slice::<u8, f32>(x) {
            return convert::from_f32(src, to, y);
        }
    }
    if to == DType::F32 {
        if let Ok(dst) = bytemuck::try_cast_slice_mut::<u8, f32>(y) {
            if convert::to_f32_into(from, x, dst) {
                return Ok(());
            }
        }
    }
    let v = load_f64(from, x);
    store_f64(to, &v, y)
}
