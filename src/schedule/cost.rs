//! The time model: what a plan costs on a given GPU, before anything runs.
//! Each op costs `max(FLOPs / peak compute, bytes / memory bandwidth)` plus a
//! launch; host transfers cost bytes over the host link. Peak figures come
//! from the spec sheets in [`super::gpus`]; the shares of them real kernels
//! reach are the `*_EFFICIENCY` constants here: the one place a measured run
//! on a GPU calibrates.
//!
//! The model ranks plans; its absolute figures are estimates, to be checked
//! against `gpt_bench` on the GPU they describe.

use serde::{Deserialize, Serialize};

use super::gpus::GpuSpec;
use super::program::{Instr, Program};
use crate::graph::Graph;
use crate::optim::quant;
use crate::tensor::DType;

/// Share of the tensor-core peak a GEMM or attention kernel reaches.
pub const MATMUL_EFFICIENCY: f64 = 0.6;
/// Share of the spec-sheet DRAM bandwidth a streaming kernel reaches.
pub const BANDWIDTH_EFFICIENCY: f64 = 0.75;
/// Share of the host link's bandwidth a pinned copy reaches.
pub const LINK_EFFICIENCY: f64 = 0.8;
/// Seconds per kernel launch, host side (CUDA's launch overhead, which eager
/// execution pays per op).
pub const LAUNCH_S: f64 = 5e-6;

/// The rates a plan is priced at.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// The GPU the rates are of.
    pub gpu: &'static str,
    /// bf16/f16 tensor-core FLOP/s.
    pub low_flops: f64,
    /// f32 FLOP/s.
    pub f32_flops: f64,
    /// DRAM bytes/s.
    pub bandwidth: f64,
    /// Host link bytes/s, one direction.
    pub host_link: f64,
}

impl Rates {
    /// The rates of `gpu`, its spec-sheet peaks scaled by the efficiencies.
    pub fn of(gpu: &GpuSpec) -> Rates {
        Rates {
            gpu: gpu.name,
            low_flops: gpu.bf16_flops * MATMUL_EFFICIENCY,
            f32_flops: gpu.fp32_flops * MATMUL_EFFICIENCY,
            bandwidth: gpu.bandwidth_bytes_per_s * BANDWIDTH_EFFICIENCY,
            host_link: gpu.host_link_bytes_per_s * LINK_EFFICIENCY,
        }
    }
}

/// Seconds one run of `p` takes at `rates`.
pub fn program_seconds(g: &Graph, p: &Program, rates: &Rates) -> f64 {
    let mut t = 0.0;
    for x in &p.instrs {
        match *x {
            Instr::Run(ni) | Instr::Recompute(ni) => {
                let n = g.node(ni);
                if n.op.is_alias() {
                    continue;
                }
                let ins: Vec<_> = n.inputs.iter().map(|&v| g.shape(v)).collect();
                let outs: Vec<_> = n.outputs.iter().map(|&v| g.shape(v)).collect();
                let flops = n.op.flops(&ins, &outs) as f64;
                let bytes: u64 = n
                    .inputs
                    .iter()
                    .chain(&n.outputs)
                    .map(|&v| g.shape(v).byte_size(g.dtype(v)))
                    .sum();
                let low = n
                    .inputs
                    .iter()
                    .any(|&v| matches!(g.dtype(v), DType::BF16 | DType::F16));
                let peak = match (n.op.family(), low) {
                    ("matmul" | "attention", true) => rates.low_flops,
                    _ => rates.f32_flops,
                };
                t += (flops / peak).max(bytes as f64 / rates.bandwidth) + LAUNCH_S;
            }
            Instr::Accumulate { value, .. } => {
                // dst += src: read both, write one.
                let bytes = g.shape(value).byte_size(g.dtype(value)) * 3;
                t += bytes as f64 / rates.bandwidth + LAUNCH_S;
            }
            Instr::Free(_) => {}
            Instr::Offload(v) | Instr::Fetch(v) => {
                // Synchronous today: the copy adds to the step.
                let bytes = g.shape(v).byte_size(g.dtype(v));
                t += bytes as f64 / rates.host_link + LAUNCH_S;
            }
        }
    }
    t
}

/// What the update costs, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateSeconds {
    /// Σg² and the AdamW kernels on the device.
    pub device: f64,
    /// Offloaded moments over the host link, both ways (the copies are
    /// synchronous today: they add to the step, none overlaps).
    pub transfer: f64,
}

/// The update's cost for parameters of `numels` elements each, with the
/// moments `q8` or f32, `host`-resident or not, each parameter a launch of
/// its own when `per_param` (gradient release) else one launch for all.
pub fn update_seconds(
    numels: &[usize],
    q8: bool,
    host: bool,
    per_param: bool,
    rates: &Rates,
) -> UpdateSeconds {
    let mut dev_bytes = 0u64;
    let mut link_bytes = 0u64;
    let mut launches = 2.0; // Σg² and AdamW
    for &n in numels {
        let n = n as u64;
        let quantised = q8 && quant::quantised(n as usize);
        // Moments: read and written, one byte or four each.
        let moments = if quantised {
            2 * n + 8 * quant::blocks(n as usize) as u64
        } else {
            8 * n
        };
        // Σg² reads g; AdamW reads p, g, writes p and a 2-byte copy.
        dev_bytes += 4 * n + (4 + 4 + 4 + 2) * n + 2 * moments;
        if host {
            link_bytes += 2 * moments;
            launches += 4.0 * (n as f64 / super::update::window_elems() as f64).ceil();
        }
        if per_param {
            launches += 2.0;
        }
    }
    UpdateSeconds {
        device: dev_bytes as f64 / rates.bandwidth + launches * LAUNCH_S,
        transfer: link_bytes as f64 / rates.host_link,
    }
}
