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
mod staging;
pub mod traffic;

pub use context::{available, CudaBackend};
pub use launch::{Entry, FamilyKernels};
pub use memory::CudaMemory;
pub use ops::embedding::embedding_ranges;
pub use ops::reduce::column_chunks;

use ops::{
    attention, cast, cross_entropy, elementwise, embedding, layernorm, matmul, reduce, rmsnorm,
    rope, shape, softmax,
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

    /// Routes each op to its family's launch ([`CudaBackend::route`]); a
    /// failure names the op and its tensors, and with HEADROOM_CUDA_SYNC=1 the
    /// backend waits after each op so that an asynchronous fault (an illegal
    /// address) is reported by the op that caused it.
    fn run(&mut self, op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()> {
        let r = self.route(op, ins, outs);
        let r = if self.sync_each_op {
            r.and_then(|()| self.sync())
        } else {
            r
        };
        r.map_err(|e| at_op(e, op.name(), ins, outs))
    }

    fn write(&mut self, dst: &TensorRef, data: &[u8]) -> Result<()> {
        self.upload(dst, data)
    }

    fn read(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        self.download(src)
    }

    fn accumulate(&mut self, dst: &TensorRef, src: &TensorRef) -> Result<()> {
        let r = elementwise::accumulate(self, dst, src);
        self.checked(r, "accumulate", &[src], &[dst])
    }

    fn sum_squares(&mut self, ts: &[&TensorRef]) -> Result<f64> {
        let r = self.sum_squares_multi(ts);
        self.checked(r, "sum_squares", ts, &[])
    }

    fn adamw(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        let r = self.adamw_multi(slots, s);
        let params: Vec<&TensorRef> = slots.iter().map(|s| s.param).collect();
        self.checked(r, "adamw", &[], &params)
    }

    fn adamw_q8(
        &mut self,
        slots: &[crate::backend::AdamWQ8Slot],
        s: &AdamWStep,
        codebook: &TensorRef,
    ) -> Result<()> {
        let r = self.adamw_q8_multi(slots, s, codebook);
        let params: Vec<&TensorRef> = slots.iter().map(|s| s.param).collect();
        self.checked(r, "adamw_q8", &[], &params)
    }

    fn timestamp(&mut self) -> Result<Option<usize>> {
        self.record_event().map(Some)
    }

    fn take_timestamps(&mut self) -> Result<Vec<f64>> {
        self.take_event_times()
    }
}

/// `e` with the op and its tensors named, shapes and dtypes.
fn at_op(e: Error, op: &str, ins: &[&TensorRef], outs: &[&TensorRef]) -> Error {
    let list = |ts: &[&TensorRef]| {
        let v: Vec<String> = ts
            .iter()
            .take(6)
            .map(|t| format!("{} {}", t.shape, t.dtype))
            .collect();
        let more = if ts.len() > 6 {
            format!(", … {} in all", ts.len())
        } else {
            String::new()
        };
        format!("{}{more}", v.join(", "))
    };
    match e {
        Error::Kernel { op: what, detail } => Error::Kernel {
            op: what,
            detail: format!("{op} (in: {}; out: {}): {detail}", list(ins), list(outs)),
        },
        other => other,
    }
}

impl CudaBackend {
    /// What `run` does to a result for the backend's own multi-tensor work.
    fn checked<T>(
        &self,
        r: Result<T>,
        op: &str,
        ins: &[&TensorRef],
        outs: &[&TensorRef],
    ) -> Result<T> {
        let r = if self.sync_each_op {
            r.and_then(|x| self.sync().map(|()| x))
        } else {
            r
        };
        r.map_err(|e| at_op(e, op, ins, outs))
    }

    /// Each op to its family's launch (ops/<family>.rs).
    fn route(&mut self, op: &Op, ins: &[&TensorRef], outs: &[&TensorRef]) -> Result<()> {
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
            Op::Silu => elementwise::silu_forward(self, dt, i, o),
            Op::SiluBackward => elementwise::silu_backward(self, dt, i, o),
            Op::Cast { to } => cast::cast_forward(self, i, o, *to),
            Op::Embedding => embedding::embedding_forward(self, dt, i, o),
            Op::EmbeddingBackward { vocab } => {
                embedding::embedding_backward(self, dt, i, o, *vocab)
            }
            Op::LayerNorm { eps, .. } => layernorm::layernorm_forward(self, dt, i, o, *eps),
            Op::LayerNormBackward => layernorm::layernorm_backward(self, dt, i, o),
            Op::RmsNorm { eps, .. } => rmsnorm::rmsnorm_forward(self, dt, i, o, *eps),
            Op::RmsNormBackward => rmsnorm::rmsnorm_backward(self, dt, i, o),
            Op::Rope {
                n_head,
                n_kv_head,
                theta,
                inverse,
            } => rope::rope_forward(self, dt, i, o, (*n_head, *n_kv_head), *theta, *inverse),
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
            Op::Attention { n_head, n_kv_head } => {
                attention::attention_forward(self, dt, i, o, (*n_head, *n_kv_head))
            }
            Op::AttentionBackward { n_head, n_kv_head } => {
                attention::attention_backward(self, dt, i, o, (*n_head, *n_kv_head))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{CachingAllocator, SimMemory};
    use crate::tensor::Shape;

    #[test]
    fn a_failure_names_the_op_and_its_tensors() {
        let mut mem = CachingAllocator::new(SimMemory::new(1 << 30));
        let mut t = |dims: &[usize], dtype| TensorRef {
            block: mem.alloc(4096).unwrap(),
            shape: Shape::new(dims),
            dtype,
        };
        let (qkv, dqkv) = (t(&[2, 8, 96], DType::BF16), t(&[2, 8, 96], DType::BF16));
        let fault = Error::Kernel {
            op: "cuda",
            detail: "sync: CUDA_ERROR_ILLEGAL_ADDRESS".into(),
        };
        let e = at_op(fault, "attention_backward", &[&qkv], &[&dqkv]).to_string();
        println!("{e}");
        assert!(e.contains("attention_backward (in: "), "{e}");
        assert!(
            e.contains(&format!("{} bf16", Shape::new(&[2, 8, 96]))),
            "{e}"
        );
        assert!(e.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{e}");
        // Other errors (a typed budget or shape error) pass through unchanged.
        let other = Error::Internal("x".into());
        let same = at_op(Error::Internal("x".into()), "matmul", &[&qkv], &[]);
        assert_eq!(same.to_string(), other.to_string());
    }
}
