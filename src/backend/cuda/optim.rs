//! The optimizer's launches (kernels/optim.cu): Σx² over many tensors and AdamW
//! over every parameter, each in one launch driven by a table of device
//! pointers uploaded to a side buffer.

use cudarc::driver::{result as drv, LaunchConfig};

use super::context::{drv_err, unavailable, CudaBackend};
use super::launch::{family_kernels, launch, ptr, EVERY_DTYPE};
use crate::backend::{AdamWSlot, AdamWStep, TensorRef};
use crate::error::{Error, Result};
use crate::tensor::DType;

family_kernels! {
    /// kernels/optim.cu.
    pub const KERNELS = "optim" {
        SUM_SQUARES_MULTI = "sum_squares_multi" for EVERY_DTYPE,
        ADAMW_MULTI = "adamw_multi" for &[DType::F32],
    }
}

impl CudaBackend {
    /// Σx² over all tensors: one launch per dtype present (`sum_squares_multi`),
    /// 64 blocks per tensor, partial sums added here in a fixed order.
    pub(super) fn sum_squares_multi(&mut self, ts: &[&TensorRef]) -> Result<f64> {
        const BLOCKS: u64 = 64;
        if let Some(t) = ts
            .iter()
            .find(|t| !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16))
        {
            return Err(Error::dtype("sum_squares", "f32, f16 or bf16", t.dtype));
        }
        let mut total = 0f64;
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let group: Vec<&&TensorRef> = ts.iter().filter(|t| t.dtype == dt).collect();
            if group.is_empty() {
                continue;
            }
            if group.len() > 65535 {
                return Err(unavailable(format!(
                    "{} tensors in one sum-of-squares launch",
                    group.len()
                )));
            }
            let mut table: Vec<u8> = Vec::with_capacity(16 * group.len());
            for t in &group {
                table.extend_from_slice(&ptr(t).to_le_bytes());
                table.extend_from_slice(&(t.shape.numel() as u64).to_le_bytes());
            }
            let dev_table = self.upload_table(&table)?;
            let parts_len = BLOCKS as usize * group.len();
            let ws = self.workspace(4 * parts_len as u64)?;
            let cfg = LaunchConfig {
                grid_dim: (BLOCKS as u32, group.len() as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(self, SUM_SQUARES_MULTI, dt, cfg, dev_table, ws)?;
            self.sync()?;
            let mut parts = vec![0f32; parts_len];
            // SAFETY: the workspace holds at least parts_len floats.
            unsafe { drv::memcpy_dtoh_sync(&mut parts, ws) }.map_err(|e| drv_err("download", e))?;
            total += parts.iter().map(|&x| x as f64).sum::<f64>();
        }
        Ok(total)
    }

    /// AdamW over all parameters in one launch (`adamw_multi_f32`): a table of
    /// (param, grad, m, v, n, decay) goes to the device, one grid row each.
    pub(super) fn adamw_multi(&mut self, slots: &[AdamWSlot], s: &AdamWStep) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        if slots.len() > 65535 {
            return Err(unavailable(format!(
                "{} parameter tensors in one AdamW launch",
                slots.len()
            )));
        }
        let (bc1, bc2) = s.bias_corrections();
        let (bc1, bc2) = (bc1 as f32, bc2 as f32);
        // The kernel's AdamSlot: five u64 then two f32 (48 bytes).
        let mut table: Vec<u8> = Vec::with_capacity(48 * slots.len());
        let mut widest = 0u64;
        for slot in slots {
            slot.check_f32()?;
            let n = slot.param.shape.numel() as u64;
            widest = widest.max(n);
            for x in [ptr(slot.param), ptr(slot.grad), ptr(slot.m), ptr(slot.v), n] {
                table.extend_from_slice(&x.to_le_bytes());
            }
            table.extend_from_slice(&(s.decay_factor(slot.decay) as f32).to_le_bytes());
            table.extend_from_slice(&0f32.to_le_bytes());
        }
        let dev_table = self.upload_table(&table)?;
        let cfg = LaunchConfig {
            grid_dim: (
                widest.div_ceil(256).clamp(1, 1024) as u32,
                slots.len() as u32,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            ADAMW_MULTI,
            DType::F32,
            cfg,
            dev_table,
            s.lr as f32,
            s.beta1 as f32,
            s.beta2 as f32,
            s.eps as f32,
            bc1,
            bc2,
            s.grad_scale as f32,
        )
    }
}
