//! The ops by family, with the family names of `graph::ops`: each file declares
//! its kernel file and entry points (`KERNELS`) and holds the `<op>_forward` /
//! `<op>_backward` launches that `Backend::run` routes to. `matmul` has no
//! kernel file (cuBLAS); `attention` has two (CUDA cores, tensor cores).

pub mod attention;
pub mod cast;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod matmul;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod shape;
pub mod softmax;

use super::launch::FamilyKernels;

/// Every kernel file the backend compiles and the entry points it may launch
/// from each: the op families' and the optimizer's.
pub const FAMILIES: &[&FamilyKernels] = &[
    &attention::KERNELS,
    &attention::FA_KERNELS,
    &cast::KERNELS,
    &cross_entropy::KERNELS,
    &elementwise::KERNELS,
    &embedding::KERNELS,
    &layernorm::KERNELS,
    &reduce::KERNELS,
    &rmsnorm::KERNELS,
    &rope::KERNELS,
    &shape::KERNELS,
    &softmax::KERNELS,
    &super::optim::KERNELS,
];
