//! Dtypes, static shapes and host-side tensors.

use std::fmt;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Element types. `F64` exists for the cpu backend's gradient checks only;
/// `I32` holds token ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I32,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I32 => "i32",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A static shape; the empty shape is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Shape {
        Shape(dims.to_vec())
    }
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
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

/// A tensor in host memory, stored in its dtype's little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Shape,
    pub dtype: DType,
    pub data: Vec<u8>,
}

impl HostTensor {
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> HostTensor {
        let shape = shape.into();
        let n = shape.byte_size(dtype) as usize;
        HostTensor {
            shape,
            dtype,
            data: vec![0; n],
        }
    }

    pub fn from_f32(shape: impl Into<Shape>, v: &[f32]) -> Result<HostTensor> {
        Self::from_f64_as(
            shape,
            &v.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            DType::F32,
        )
    }

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

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// Values widened to f64 (exact for every float dtype and for i32).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        load_f64(self.dtype, &self.data)
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.to_f64_vec().into_iter().map(|x| x as f32).collect()
    }

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
    }
}

/// Writes `v` into `out` as `dtype`, rounding to nearest-even.
pub fn store_f64(dtype: DType, v: &[f64], out: &mut [u8]) -> Result<()> {
    match dtype {
        DType::F32 => {
            let o: &mut [f32] = bytemuck::cast_slice_mut(out);
            o.iter_mut().zip(v).for_each(|(o, &x)| *o = x as f32);
        }
        DType::F64 => bytemuck::cast_slice_mut::<u8, f64>(out).copy_from_slice(v),
        DType::F16 => {
            let o: &mut [f16] = bytemuck::cast_slice_mut(out);
            o.iter_mut()
                .zip(v)
                .for_each(|(o, &x)| *o = f16::from_f64(x));
        }
        DType::BF16 => {
            let o: &mut [bf16] = bytemuck::cast_slice_mut(out);
            o.iter_mut()
                .zip(v)
                .for_each(|(o, &x)| *o = bf16::from_f64(x));
        }
        DType::I32 => return Err(Error::dtype("store", "a float dtype", dtype)),
    }
    Ok(())
}
