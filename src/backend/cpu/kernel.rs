//! The cpu kernels' runtime: the float types they are generic over (f32 for
//! training, f64 for gradient checks) with their GEMM, the operand view the
//! backend hands them, and the pointer rayon workers share for disjoint writes.

use std::borrow::Cow;
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::AddAssign;

use num_traits::{Float, FromPrimitive};

use crate::error::{Error, Result};
use crate::tensor::DType;

/// The float types the cpu reference kernels run in: f32 for training, f64 for
/// gradient checks. Low-precision storage is widened to f32 around each kernel.
pub trait Real:
    Float + FromPrimitive + Sum + AddAssign + Default + Debug + Send + Sync + 'static
{
    /// The dtype of this float type (`F32` or `F64`).
    const DTYPE: DType;
    /// `c[m×n] = a[m×k] @ b[k×n]` with arbitrary row/column strides (elements),
    /// or `c += a @ b` if `acc`; on the calling thread.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-overlapping matrices.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
        csc: isize,
        acc: bool,
    );
    /// `e^x` as the kernels take it: a vectorisable polynomial in f32
    /// ([`exp_f32`](super::math::exp_f32), ≤ 2 ulp), `f64::exp` in f64.
    fn vexp(self) -> Self;
    /// `bytes` stored as `dtype` (a float dtype), widened to this type.
    fn widen(dtype: DType, bytes: &[u8]) -> Vec<Self>;
    /// `src` stored into `out` as `dtype`, rounded to nearest-even.
    fn narrow(src: &[Self], dtype: DType, out: &mut [u8]) -> Result<()>;
    /// A buffer of `n` elements whose contents are unspecified, for a caller
    /// that writes each before reading it; [`Real::give`] returns it.
    fn take(n: usize) -> Vec<Self> {
        vec![Self::zero(); n]
    }
    /// Takes back a buffer from [`Real::take`] or [`Real::widen`] for reuse.
    fn give(_v: Vec<Self>) {}
    /// The f64 constant `x` in this type (NaN if it cannot be converted).
    fn c(x: f64) -> Self {
        Self::from_f64(x).unwrap_or_else(Self::nan)
    }
}

impl Real for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn vexp(self) -> f32 {
        super::math::exp_f32(self)
    }
    fn widen(dtype: DType, bytes: &[u8]) -> Vec<f32> {
        super::convert::to_f32(dtype, bytes)
    }
    fn narrow(src: &[f32], dtype: DType, out: &mut [u8]) -> Result<()> {
        super::convert::from_f32(src, dtype, out)
    }
    fn take(n: usize) -> Vec<f32> {
        super::scratch::take(n)
    }
    fn give(v: Vec<f32>) {
        super::scratch::give(v)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        c: *mut f32,
        rsc: isize,
        csc: isize,
        acc: bool,
    ) {
        let beta = if acc { 1.0 } else { 0.0 };
        matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

impl Real for f64 {
    const DTYPE: DType = DType::F64;
    #[inline(always)]
    fn vexp(self) -> f64 {
        self.exp()
    }
    fn widen(dtype: DType, bytes: &[u8]) -> Vec<f64> {
        crate::tensor::load_f64(dtype, bytes)
    }
    fn narrow(src: &[f64], dtype: DType, out: &mut [u8]) -> Result<()> {
        crate::tensor::store_f64(dtype, src, out)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        c: *mut f64,
        rsc: isize,
        csc: isize,
        acc: bool,
    ) {
        let beta = if acc { 1.0 } else { 0.0 };
        matrixmultiply::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

/// One operand of a cpu kernel: float data widened to the kernel's type, or ids.
pub enum In<'a, F: Real> {
    /// Float data: borrowed when stored in `F`, else a widened copy.
    F(Cow<'a, [F]>),
    /// i32 ids (token ids, targets), borrowed.
    I(&'a [i32]),
}

impl<'a, F: Real> In<'a, F> {
    /// The float data, or an [`Error::DType`] naming `op` if the operand holds ids.
    pub fn f(&self, op: &'static str) -> Result<&[F]> {
        match self {
            In::F(x) => Ok(x),
            In::I(_) => Err(Error::dtype(op, "a float operand", DType::I32)),
        }
    }
    /// The ids, or an [`Error::DType`] naming `op` if the operand holds floats.
    pub fn ids(&self, op: &'static str) -> Result<&[i32]> {
        match self {
            In::I(x) => Ok(x),
            In::F(_) => Err(Error::dtype(op, "i32 ids", F::DTYPE)),
        }
    }
}

/// A pointer that rayon workers may share when each writes a disjoint range.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
impl<T> SharedMut<T> {
    /// Going through a method makes closures capture the whole wrapper (which is
    /// Send) rather than its raw-pointer field (which is not).
    pub(crate) fn ptr(self) -> *mut T {
        self.0
    }
}
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}
