//! Host views of the cpu backend's tensors: their blocks are host addresses
//! (see [`CpuMemory`](super::CpuMemory)), read and written in place.

use std::borrow::Cow;

use crate::backend::cpu::kernel::Real;
use crate::backend::TensorRef;

/// The bytes of `t`.
pub(super) fn bytes(t: &TensorRef) -> &[u8] {
    // SAFETY: the block was allocated by CpuMemory (handle is a host address) and
    // is live while the executor holds its TensorRef; the shape rule sized it.
    unsafe {
        std::slice::from_raw_parts(
            (t.block.handle + t.block.offset) as *const u8,
            t.byte_size() as usize,
        )
    }
}

#[allow(clippy::mut_from_ref)]
pub(super) fn bytes_mut(t: &TensorRef) -> &mut [u8] {
    // SAFETY: as in `bytes`; outputs never alias inputs or each other (the
    // allocator hands out disjoint blocks), so no other reference exists.
    unsafe {
        std::slice::from_raw_parts_mut(
            (t.block.handle + t.block.offset) as *mut u8,
            t.byte_size() as usize,
        )
    }
}

/// Reads a float tensor as `F`, borrowing when the dtype already matches.
pub(super) fn load<F: Real>(t: &TensorRef) -> Cow<'_, [F]> {
    if t.dtype == F::DTYPE {
        Cow::Borrowed(bytemuck_cast::<F>(bytes(t)))
    } else {
        Cow::Owned(F::widen(t.dtype, bytes(t)))
    }
}

pub(super) fn bytemuck_cast<F: Real>(b: &[u8]) -> &[F] {
    // SAFETY: F is f32 or f64 (plain old data); blocks are 64-byte aligned and
    // sized to a whole number of elements.
    unsafe {
        std::slice::from_raw_parts(b.as_ptr() as *const F, b.len() / std::mem::size_of::<F>())
    }
}

#[allow(clippy::mut_from_ref)]
pub(super) fn bytemuck_cast_mut<F: Real>(b: &mut [u8]) -> &mut [F] {
    // SAFETY: as in bytemuck_cast.
    unsafe {
        std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut F, b.len() / std::mem::size_of::<F>())
    }
}
