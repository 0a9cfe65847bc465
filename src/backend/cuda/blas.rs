//! cuBLAS: every GEMM (f32, and f16/bf16 with f32 accumulation on tensor
//! cores), and the workspace it is given from the caching allocator.

use cudarc::cublas::{result as blas, sys as blas_sys};

use super::context::{drv_err, unavailable, CudaBackend};
use super::launch::ptr;
use crate::backend::TensorRef;
use crate::error::Result;
use crate::graph::ops::matmul;
use crate::tensor::DType;

impl CudaBackend {
    /// cuBLAS's recommended workspace: 32 MiB on Hopper, 4 MiB before.
    pub(super) fn blas_workspace_bytes(&self) -> u64 {
        if self.sm() >= 90 {
            32 << 20
        } else {
            4 << 20
        }
    }

    /// Hands cuBLAS its workspace (none: `None`).
    pub(super) fn set_blas_workspace(&mut self, w: Option<&TensorRef>) -> Result<()> {
        let (p, n) = w.map_or((0, 0), |t| (ptr(t), t.byte_size() as usize));
        // SAFETY: the block stays allocated for the trainer's life; cuBLAS only
        // uses it inside calls on this handle.
        let st = unsafe { blas_sys::cublasSetWorkspace_v2(self.blas, p as *mut _, n) };
        if st != blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(drv_err("cublas workspace", st));
        }
        Ok(())
    }

    /// `c = op(a) @ op(b)` (row-major) as cuBLAS's column-major `cᵀ = op(b)ᵀ op(a)ᵀ`.
    pub(super) fn gemm(
        &mut self,
        a: &TensorRef,
        b: &TensorRef,
        c: &TensorRef,
        ta: bool,
        tb: bool,
    ) -> Result<()> {
        let (d, _) = matmul::dims(&a.shape, &b.shape, ta, tb)?;
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        // A shared weight under a batched, untransposed `a` is one taller GEMM.
        let (m, batch) = if d.b_shared && !ta && !d.a_shared {
            (d.m * d.batch, 1)
        } else {
            (d.m, d.batch)
        };
        let (n, k) = (d.n, d.k);
        let lda = if tb { k } else { n }; // of b, cuBLAS's first operand
        let ldb = if ta { m } else { k }; // of a
        let sa = if d.b_shared { 0 } else { (k * n) as i64 };
        let sb = if d.a_shared || batch == 1 {
            0
        } else {
            (m * k) as i64
        };
        let sc = (m * n) as i64;
        let dt = match a.dtype {
            DType::F32 => blas_sys::cudaDataType_t::CUDA_R_32F,
            DType::F16 => blas_sys::cudaDataType_t::CUDA_R_16F,
            DType::BF16 => blas_sys::cudaDataType_t::CUDA_R_16BF,
            other => return Err(unavailable(format!("{other} matmul"))),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: pointers are live device blocks sized by the shape rule; the
        // handle runs on the backend's stream.
        unsafe {
            blas::gemm_strided_batched_ex(
                self.blas,
                op(tb),
                op(ta),
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const _,
                ptr(b) as *const _,
                dt,
                lda as i32,
                sa,
                ptr(a) as *const _,
                dt,
                ldb as i32,
                sb,
                &beta as *const f32 as *const _,
                ptr(c) as *mut _,
                dt,
                n as i32,
                sc,
                batch as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| drv_err("cublas gemm", e))
    }
}
