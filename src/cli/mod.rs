//! The `headroom` binary's subcommands, one file each, and what they share:
//! the budget flag, the plan's text, the memory-trace file.

pub mod devices;
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
