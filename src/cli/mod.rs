//! The `headroom` binary's subcommands, one file each, and what they share:
//! the budget flag, the plan's text, the memory-trace file.

pub mod devices;
pub mod export;
pub mod plan;
pub mod report;
pub mod sample;
pub mod train;

use std::path::Path;

use headroom::memory::budget::MIN_BUDGET;
use headroom::memory::{format_bytes, Budget, Trace};
use headroom::output::Input;
use headroom::{Device, Error, Result, TrainConfig};

/// `base` for `device`: `Auto` precision resolved against it, and its
/// libraries' workspace reserved; the one place a command's config is built.
pub fn step_config(device: &Device, base: TrainConfig) -> TrainConfig {
    TrainConfig {
        precision: base.precision.resolve(device.preferred_low_precision()),
        workspace_bytes: device.workspace_bytes(),
        ..base
    }
}

/// The levers' flags, shared by `train` and `plan`.
#[derive(clap::Args, Clone, Debug)]
pub struct LeverArgs {
    /// The GPU to plan for (`--gpu list` shows the catalog): its memory sets
    /// the default budget, its spec-sheet figures the predicted step time.
    #[arg(long)]
    pub gpu: Option<String>,
    /// Most host memory offloaded state may take: 64GiB, 50%% (of the host's
    /// available memory) or bytes. Default: half of what is available.
    #[arg(long)]
    pub host_budget: Option<String>,
    /// AdamW state precision: f32, 8bit, or auto (8-bit only where no f32
    /// plan fits).
    #[arg(long, default_value = "f32")]
    pub optimizer_state: String,
    /// Clip the global gradient norm to this (0: no clipping, which makes
    /// gradient release legal). Default: 1.0.
    #[arg(long)]
    pub grad_clip: Option<f64>,
}

impl LeverArgs {
    /// The flags written into `cfg` and `opt`; the GPU they name, if any.
    pub fn apply(
        &self,
        cfg: &mut TrainConfig,
        opt: &mut headroom::AdamW,
    ) -> Result<Option<&'static headroom::schedule::gpus::GpuSpec>> {
        cfg.optimizer_state = headroom::schedule::levers::OptimizerState::parse(
            &self.optimizer_state,
        )
        .ok_or_else(|| {
            Error::invalid(
                "--optimizer-state",
                format!("'{}': use f32, 8bit or auto", self.optimizer_state),
            )
        })?;
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c >= 0.0) {
                return Err(Error::invalid(
                    "--grad-clip",
                    format!("{c}: use a norm > 0, or 0 for no clipping"),
                ));
            }
            opt.grad_clip = (c > 0.0).then_some(c);
        }
        if let Some(h) = &self.host_budget {
            let available = headroom::backend::cpu::host_available_bytes();
            let bytes = Budget::parse(h)
                .map_err(|e| Error::invalid("--host-budget", e.to_string()))?
                .resolve(available);
            cfg.host_budget_bytes = Some(bytes);
        }
        let gpu = match &self.gpu {
            None => None,
            Some(name) => Some(headroom::schedule::gpus::by_name(name).ok_or_else(|| {
                Error::invalid(
                    "--gpu",
                    format!(
                        "'{name}' is not in the catalog; use one of {} (headroom plan --gpu list)",
                        headroom::schedule::gpus::names().join(", ")
                    ),
                )
            })?),
        };
        cfg.gpu = gpu.map(|g| g.name.to_string());
        Ok(gpu)
    }
}

/// The catalog `--gpu list` prints.
pub fn gpu_list() -> String {
    let mut s = format!(
        "{:<12} {:<32} {:>9} {:>10} {:>11} {:>10} {:>10}\n",
        "name", "GPU", "memory", "DRAM GB/s", "bf16 TFLOP", "f32 TFLOP", "host GB/s"
    );
    for g in headroom::schedule::gpus::CATALOG {
        s += &format!(
            "{:<12} {:<32} {:>9} {:>10.0} {:>11.1} {:>10.1} {:>10.1}\n",
            g.name,
            g.display,
            format_bytes(g.memory_bytes),
            g.bandwidth_bytes_per_s / 1e9,
            g.bf16_flops / 1e12,
            g.fp32_flops / 1e12,
            g.host_link_bytes_per_s / 1e9
        );
    }
    s + "figures: spec sheets (see src/schedule/gpus.rs for each source); the time model scales them by measured-efficiency constants in src/schedule/cost.rs\n"
}

/// Budgets `device` for a `--gpu` plan: a percentage is of the GPU's memory.
pub fn resolve_gpu_budget(
    device: &mut Device,
    text: &str,
    gpu: &headroom::schedule::gpus::GpuSpec,
) -> Result<u64> {
    let budget = Budget::parse(text)?;
    let bytes = budget.resolve(gpu.memory_bytes);
    if bytes > gpu.memory_bytes {
        log::warn!(
            "the budget {} is more than the {} of {}",
            format_bytes(bytes),
            format_bytes(gpu.memory_bytes),
            gpu.display
        );
    }
    device.set_budget(Some(Budget::Bytes(bytes)));
    Ok(bytes)
}

/// Budgets the device with `--budget`: below the allocator's smallest segment
/// is an error that says why; above the device's memory, a warning.
pub fn resolve_budget(device: &mut Device, text: &str) -> Result<u64> {
    let budget = Budget::parse(text)?;
    let total = device.total_memory();
    let bytes = budget.resolve(total);
    if bytes < MIN_BUDGET {
        return Err(Error::invalid(
            "--budget",
            format!(
                "{budget} of {} is {}, below the allocator's smallest segment of 2 MiB: nothing could be reserved; give a larger budget",
                device.name(),
                format_bytes(bytes)
            ),
        ));
    }
    if bytes > total {
        log::warn!(
            "the budget {} is more than the {} memory of {}: the device, not the budget, will be the limit",
            format_bytes(bytes),
            format_bytes(total),
            device.name()
        );
    }
    device.set_budget(Some(budget));
    Ok(bytes)
}

/// The plan as the CLI prints it: the candidates that decided it, or with
/// `--verbose` every one.
pub fn plan_text(plan: &headroom::schedule::Plan, verbose: bool) -> String {
    match verbose {
        true => format!("{plan:#}"),
        false => plan
            .to_string()
            .replace("{:#} lists them", "--verbose lists them"),
    }
}

/// Writes `trace` as JSON and says where, and how to draw it.
pub fn save_trace(trace: &Trace, path: &Path, what: &str, inputs: &[Input]) -> Result<String> {
    let json = serde_json::to_vec(trace).map_err(|e| Error::Internal(e.to_string()))?;
    headroom::output::write(path, what, &json, inputs)?;
    Ok(format!(
        "memory trace: {} ({} events); draw it with `headroom report {}`",
        path.display(),
        trace.events.len(),
        path.display()
    ))
}
