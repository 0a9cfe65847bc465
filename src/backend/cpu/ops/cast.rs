//! Casts between float dtypes on the cpu: a widening load and a
//! round-to-nearest-even store, the storage conversions of `tensor`.

use crate::error::Result;
use crate::tensor::{load_f64, store_f64, DType};

/// `y` (stored as `to`) = `x` (stored as `from`), through f64, rounded to
/// nearest-even.
pub fn cast_forward(from: DType, x: &[u8], to: DType, y: &mut [u8]) -> Result<()> {
    let v = load_f64(from, x);
    store_f64(to, &v, y)
}
