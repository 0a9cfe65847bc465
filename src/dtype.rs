//! Element types. A leaf module: errors name dtypes, and tensors carry them,
//! so neither may be where the other is defined.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Element types. `F64` exists for the cpu backend's gradient checks only;
/// `I32` holds token ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit float: master weights, optimizer state and f32 activations.
    F32,
    /// IEEE half precision (activations under f16 autocast).
    F16,
    /// bfloat16: f32's exponent range with an 8-bit significand (activations under
    /// bf16 autocast).
    BF16,
    /// 64-bit float, for gradient checks on the cpu backend.
    F64,
    /// 32-bit signed integer: token ids and targets.
    I32,
    /// Raw bytes: the codes of 8-bit optimizer state
    /// ([`crate::optim::quant`]). No graph op reads or writes it.
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 => 8,
            DType::U8 => 1,
        }
    }

    /// True for every dtype but `I32` and `U8`.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32 | DType::U8)
    }

    /// Lower-case name as messages print it (`f32`, `bf16`, `i32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
