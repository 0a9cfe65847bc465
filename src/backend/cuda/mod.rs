//! The cuda backend: kernels in `kernels/*.cu` compiled at first use by NVRTC to
//! CUBIN for the device's own architecture, GEMMs through cuBLAS (f32, and
//! f16/bf16 with f32 accumulation on tensor cores), memory through plain
//! `cuMemAlloc`/`cuMemFree` under the caching allocator (not the stream-ordered
//! pool), so reserved bytes are the truth.
//!
//! cudarc loads every CUDA library at run time: this builds anywhere, and a
//! machine without a driver gets a typed error, never a panic.
//!
//! Layout: `context` (the backend's state, module and function cache),
//! `memory`, `blas` (GEMMs), `launch` (kernel registration and launch),
//! `compile` (NVRTC), `optim` (Σx², AdamW), and `ops/<family>.rs` with the
//! families of `graph::ops`, each declaring its kernel file's entry points.
//!
//! Status: the kernels compile (tested in CI for sm_80 and sm_90); this host code
//! has not yet run on a GPU in this repository's history (see the README).

mod blas;
pub mod cache;
pub mod compile;
mod context;
mod launch;
mod memory;
pub mod ops;
pub mod optim;
pub mod plan;

pub use context::{available, CudaBackend};
pub use launch::{Entry, FamilyKernels};
pub use memory::CudaMemory;
pub use ops::embedding::embedding_ranges;
pub use ops::reduce::column_chunks;

use ops::{
    attention, cast, cross_entropy, elementwise, embedding, layernorm, matmul, reduce, shape,
    softmax,
};

use super::{AdamWSlot, AdamWStep, Backend, TensorRef};
use crate::error::{Error, Result};
use crate::graph::ops::{storage_dtype, Op};
use crate::tensor::DType;

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn supports(&self, dtype: DType) -> bool {
        !matches!(dtype, DType::F64)
    }

    /// cuBLAS's recommended workspace: 32 MiB on Hopper, 4 MiB before.
    fn workspace_bytes(&self) -> u64 {
        self.blas_workspace_bytes()
    }

    fn set_workspace(&mut self, w: Option<&TensorRef>) -> Result<()> {
        self.set_blas_workspace(w)
    }

    fn preferred_low_precision(&self) -> Option<DType> {
        // bf16 tensor cores from Ampere (sm_80) on; f16 before.
        Some(if self.sm() >= 80 {
            DType::BF16
        } else {
            DType::F16
        })
    }

    /// Routes each op to its family's launch (ops/<family>.rs).
    fn run(&mut self, op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()> {
        self.bind()?;
        let dt = storage_dtype(ins.iter().chain(outs).map(|t| t.dtype));
        // A type no kernel is instantiated for is refused before any family.
        launch::suffix(dt)?;
        let (i, o) = (ins, outs);
        match op {
            Op::MatMul { ta, tb } => matmul::matmul_forward(self, i, o, *ta, *tb),
            Op::Add => elementwise::add_forward(self, dt, i, o),
            Op::Mul => elementwise::mul_forward(self, dt, i, o),
            Op::Scale { factor } => elementwise::scale_forward(self, dt, i, o, *factor),
            Op::Fill { value, .. } => elementwise::fill_forward(self, dt, o, *value),
            Op::Gelu => elementwise::gelu_forward(self, dt, i, o),
            Op::GeluBackward => elementwise::gelu_backward(self, dt, i, o),
            Op::BiasGelu => elementwise::bias_gelu_forward(self, dt, i, o),
            Op::BiasGeluBackward => elementwise::bias_gelu_backward(self, dt, i, o),
            Op::Cast { to } => cast::cast_forward(self, i, o, *to),
            Op::Embedding => embedding::embedding_forward(self, dt, i, o),
            Op::EmbeddingBackward { vocab } => {
                embedding::embedding_backward(self, dt, i, o, *vocab)
            }
            Op::LayerNorm { eps } => layernorm::layernorm_forward(self, dt, i, o, *eps),
            Op::LayerNormBackward => layernorm::layernorm_backward(self, dt, i, o),
            Op::Softmax => softmax::softmax_forward(self, dt, i, o),
            Op::SoftmaxBackward => softmax::softmax_backward(self, dt, i, o),
            Op::CrossEntropy { classes } => {
                cross_entropy::cross_entropy_forward(self, dt, i, o, *classes)
            }
            Op::CrossEntropyBackward { classes } => {
                cross_entropy::cross_entropy_backward(self, dt, i, o, *classes)
            }
            Op::CrossEntropyFused { classes } => {
                cross_entropy::cross_entropy_fused(self, dt, i, o, *classes)
            }
            Op::Attention { n_head } => attention::attention_forward(self, dt, i, o, *n_head),
            Op::AttentionBackward { n_head } => {
                attention::attention_backward(self, dt, i, o, *n_head)
            }
            Op::Transpose { a, b } => shape::transpose_forward(self, dt, i, o, *a, *b),
            Op::Split { axis, .. } => shape::split_forward(self, dt, i, o, *axis),
            Op::Concat { axis } => shape::concat_forward(self, dt, i, o, *axis),
            Op::Sum { axes } => reduce::sum_forward(self, dt, i, o, axes, false),
            Op::Mean { axes } => reduce::sum_forward(self, dt, i, o, axes, true),
            Op::Expand { axes, .. } => reduce::expand_forward(self, dt, i, o, axes),
            Op::Reshape { .. } => Err(Error::Internal("reshape reached a kernel".into())),
        }
    }

    fn write(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()> {
        self.upload(dst, data)
    }

    fn read(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        self.download(src)
    }

    fn accumulate(&mut self, dst: &TensorRef, src: &TensorRef) -> Result<()> {
        elementwise::accumulate(self, dst, src)
    }

    fn sum_squares(&mut self, ts: &[&TensorRef]) -> Result<f64> {
        self.sum_squares_multi(ts)
    }

    fn adamw(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        self.adamw_multi(slots, s)
    }
}
