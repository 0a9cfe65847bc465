//! `headroom report`: a memory trace drawn as an SVG timeline.

use std::path::PathBuf;

use headroom::memory::{format_bytes, Trace};
use headroom::output::Input;
use headroom::Result;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Trace file written by `headroom train --memory-trace FILE`.
    pub trace: PathBuf,
    /// SVG file to write.
    #[arg(long, default_value = "timeline.svg")]
    pub out: PathBuf,
    /// Only this training step (1-based); default: the whole trace.
    #[arg(long)]
    pub step: Option<u64>,
}

pub fn report(a: ReportArgs) -> Result<()> {
    let trace = headroom::report::select_step(&Trace::load(&a.trace)?, a.step)?;
    let inputs = [Input::new("memory trace being reported", &a.trace)];
    let an = headroom::report::render_svg(&trace, &a.out, &inputs)?;
    println!(
        "wrote {}: {} events, peak allocated {} ({}), peak reserved {}",
        a.out.display(),
        trace.events.len(),
        format_bytes(an.peak_allocated),
        an.peak_phase.map_or("?", |p| p.name()),
        format_bytes(an.peak_reserved)
    );
    println!("largest tensors at the peak:");
    for t in &an.top {
        println!(
            "  {:>12}  {:<22} {}",
            format_bytes(t.bytes),
            t.op,
            t.phase.name()
        );
    }
    Ok(())
}
