//! A backend that computes nothing, over a [`SimMemory`](crate::memory::SimMemory):
//! the trainer's own micro-batch code ([`Runner`](crate::schedule::run::Runner))
//! runs on it unchanged, so the allocator sees the exact allocation sequence of
//! a real step. The planner's predictions come from here.

use super::{AdamWSlot, AdamWStep, Backend, TensorRef};
use crate::error::Result;
use crate::graph::Op;
use crate::tensor::DType;

/// The backend of [`Device::simulated`](super::Device::simulated): supports every
/// dtype, runs no kernel, writes nothing and reads back zeros.
pub struct NullBackend;

impl Backend for NullBackend {
    fn name(&self) -> &'static str {
        "simulated"
    }
    fn supports(&self, _dtype: DType) -> bool {
        true
    }
    fn run(&mut self, _op: &Op, _ins: &[&TensorRef], _outs: &[&TensorRef]) -> Result<()> {
        Ok(())
    }
    fn write(&mut self, _dst: &TensorRef, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    fn read(&mut self, src: &TensorRef) -> Result<Vec<u8>> {
        Ok(vec![0; src.byte_size() as usize])
    }
    fn accumulate(&mut self, _dst: &TensorRef, _src: &TensorRef) -> Result<()> {
        Ok(())
    }
    fn sum_squares(&mut self, _ts: &[&TensorRef]) -> Result<f64> {
        Ok(0.0)
    }
    fn adamw(&mut self, _slots: &[AdamWSlot], _step: &AdamWStep) -> Result<()> {
        Ok(())
    }
    fn adamw_q8(
        &mut self,
        _slots: &[super::AdamWQ8Slot],
        _step: &AdamWStep,
        _codebook: &TensorRef,
    ) -> Result<()> {
        Ok(())
    }
}
