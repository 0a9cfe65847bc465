//! The `headroom` command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::ProgressBar;
use serde_json::json;

use headroom::data::ByteTokenizer;
use headroom::memory::budget::MIN_BUDGET;
use headroom::memory::{format_bytes, Budget, Trace};
use headroom::output::Input;
use headroom::rng::Rng;
use headroom::{AdamW, Device, Error, Gpt, GptConfig, Precision, Result, TrainConfig, Trainer};

mod cli;

#[derive(Parser)]
#[command(
    name = "headroom",
    version,
    about = "Train transformers without dying of out-of-memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GPT (default: a tiny byte-level model on the bundled Shakespeare).
    Train(TrainArgs),
    /// Will this model fit this budget? Plans a step by simulation only: no GPU,
    /// no weights allocated.
    Plan(PlanArgs),
    /// List the devices headroom can train on.
    Devices(DevicesArgs),
    /// Generate text from a checkpoint.
    Sample(SampleArgs),
    /// Draw a memory trace (from `train --memory-trace`) as an SVG timeline.
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct PlanArgs {
    /// Model preset: tiny, gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1558m.
    #[arg(long, default_value = "tiny")]
    model: String,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens per sequence (default: the model's context).
    #[arg(long)]
    seq: Option<usize>,
    /// Memory budget: 24GiB, 512MiB, 1.5GB, 90% (of --backend's memory) or bytes.
    #[arg(long, default_value = "90%")]
    budget: String,
    /// f32, bf16, f16 or auto (resolved for --backend).
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Whose memory a percentage budget is of: auto or cpu.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// List every candidate plan, the untried ones too (the JSON always does).
    #[arg(long)]
    verbose: bool,
    /// Write the chosen plan's simulated memory trace here (draw it with
    /// `headroom report`): where the predicted peak comes from, before any run.
    #[arg(long)]
    memory_trace: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// A checkpoint directory, or a --checkpoint-dir (its newest valid checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "\n")]
    prompt: String,
    /// Tokens (bytes) to generate.
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Backend: auto or cpu.
    #[arg(long, default_value = "auto")]
    backend: String,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Trace file written by `headroom train --memory-trace FILE`.
    trace: PathBuf,
    /// SVG file to write.
    #[arg(long, default_value = "timeline.svg")]
    out: PathBuf,
    /// Only this training step (1-based); default: the whole trace.
    #[arg(long)]
    step: Option<u64>,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Text file to train on (any bytes; default: the bundled tinyshakespeare).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model preset: tiny, gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1558m.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Backend: auto, cpu, cuda or wgpu.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens per sequence (default: the model's context).
    #[arg(long)]
    seq: Option<usize>,
    /// Peak learning rate (default: the preset's).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Evaluate validation loss every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Write one JSON line per step and per evaluation to FILE.
    #[arg(long)]
    metrics_out: Option<PathBuf>,
    /// Most memory the run may reserve: 24GiB, 512MiB, 1.5GB, 90% (of the device,
    /// the default) or bytes. The planner fits each step inside it.
    #[arg(long)]
    budget: Option<String>,
    /// Record every allocation and free (tagged by op and phase) as JSON in FILE.
    #[arg(long)]
    memory_trace: Option<PathBuf>,
    /// Activation precision: f32, bf16, f16 (with loss scaling) or auto (the
    /// backend's best; f32 on cpu, which only stores low precision).
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Save checkpoints into DIR (at the end, every --checkpoint-every steps, and on Ctrl-C).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Steps between checkpoints (0: only at the end and on Ctrl-C).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// How many checkpoints to keep in --checkpoint-dir.
    #[arg(long, default_value_t = 3)]
    keep_checkpoints: usize,
    /// Continue from the newest valid checkpoint in --checkpoint-dir.
    #[arg(long)]
    resume: bool,
    /// Bytes to generate after training.
    #[arg(long, default_value_t = 200)]
    sample_tokens: usize,
    /// With --resume: continue on a --data file other than the one the
    /// checkpoint was trained on (refused otherwise).
    #[arg(long)]
    allow_data_change: bool,
    /// Print every candidate plan, the untried ones too.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    quiet_wayland_probe();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Pipe(Box::new(LogWriter)))
        .init();
    let cli = Cli::parse();
    let (r, command) = match cli.command {
        Command::Train(a) => (cli::train::train(a), "train"),
        Command::Report(a) => (report(a), "report"),
        Command::Plan(a) => (plan(a), "plan"),
        Command::Sample(a) => (sample(a), "sample"),
        Command::Devices(a) => (devices(a), "devices"),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted { .. }) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {}", cli_message(&e, command));
            ExitCode::FAILURE
        }
    }
}

/// The library's errors name its API; the CLI's user knows the flags.
const FLAGS: &[(&str, &str)] = &[
    ("TrainConfig::batch", "--batch"),
    ("TrainConfig::seq_len", "--seq"),
    ("TrainConfig::steps", "--steps"),
    ("TrainConfig::precision", "--precision"),
    ("AdamW::lr", "--lr"),
    ("Device::set_budget", "--budget"),
    ("Device::by_name", "--backend"),
    ("report step", "--step"),
    ("invalid budget:", "invalid --budget:"),
];

/// An error as the CLI prints it: flags for API names, and advice for the
/// command that failed.
fn cli_message(e: &Error, command: &str) -> String {
    let mut msg = e.to_string();
    for (api, flag) in FLAGS {
        msg = msg.replace(api, flag);
    }
    let advice = match (e, command) {
        (Error::NoValidCheckpoint { .. }, "sample") => {
            "; give --checkpoint a checkpoint directory (step-NNNNNNNN) or the --checkpoint-dir of a run"
        }
        (Error::BadTrace { .. }, "report") => "; give `headroom report` the file a --memory-trace wrote",
        _ => "",
    };
    msg + advice
}

/// The progress bar that log lines must not tear, while one is drawn.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Sends log lines through `bar` (hidden while a line prints), or straight to
/// stderr when `None`.
fn log_through(bar: Option<ProgressBar>) {
    if let Ok(mut b) = BAR.lock() {
        *b = bar;
    }
}

/// env_logger's output: each record on a line of its own, above the bar.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Probing wgpu adapters loads Mesa's window-system code, whose Wayland client
/// prints "XDG_RUNTIME_DIR is invalid or not set" on every command when the
/// variable is missing (a server, a container, CI). Compute needs no display:
/// point it at a private directory of our own. Done first in `main`, before
/// any thread exists to race the environment.
fn quiet_wayland_probe() {
    if !cfg!(target_os = "linux")
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_dir())
    {
        return;
    }
    let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("headroom-runtime-{uid}"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // Only a directory that is ours and private, as Wayland requires.
        let ok = std::fs::symlink_metadata(&dir).is_ok_and(|m| {
            m.is_dir() && m.uid().to_string() == uid && m.permissions().mode() & 0o077 == 0
        });
        if ok {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}

/// Budgets the device with `--budget`: below the allocator's smallest segment
/// is an error that says why; above the device's memory, a warning.
fn resolve_budget(device: &mut Device, text: &str) -> Result<u64> {
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
fn plan_text(plan: &headroom::schedule::Plan, verbose: bool) -> String {
    match verbose {
        true => format!("{plan:#}"),
        false => plan
            .to_string()
            .replace("{:#} lists them", "--verbose lists them"),
    }
}

/// Writes `trace` as JSON and says where, and how to draw it.
fn save_trace(trace: &Trace, path: &Path, what: &str, inputs: &[Input]) -> Result<String> {
    let json = serde_json::to_vec(trace).map_err(|e| Error::Internal(e.to_string()))?;
    headroom::output::write(path, what, &json, inputs)?;
    Ok(format!(
        "memory trace: {} ({} events); draw it with `headroom report {}`",
        path.display(),
        trace.events.len(),
        path.display()
    ))
}

fn report(a: ReportArgs) -> Result<()> {
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

fn plan(a: PlanArgs) -> Result<()> {
    let config = GptConfig::preset(&a.model)?;
    let seq = a.seq.unwrap_or(config.block_size);
    let mut device = Device::by_name(&a.backend)?;
    let precision: Precision = a.precision.parse()?;
    let cfg = TrainConfig {
        batch: a.batch,
        seq_len: seq,
        precision: precision.resolve(device.preferred_low_precision()),
        workspace_bytes: device.workspace_bytes(),
        ..TrainConfig::default()
    };
    cfg.validate(config.block_size)?;
    let budget_bytes = resolve_budget(&mut device, &a.budget)?;
    if let Some(p) = &a.memory_trace {
        headroom::output::preflight(p, "--memory-trace", &[])?;
    }
    let model = Gpt::new(config.clone())?;
    let opt = AdamW::new(config.default_lr());
    let start = Instant::now();
    let r = headroom::schedule::plan(&model, opt, &cfg, budget_bytes, &[]);
    let secs = start.elapsed().as_secs_f64();
    if let (Ok(p), Some(path)) = (&r, &a.memory_trace) {
        let choice = headroom::schedule::Choice {
            micro_batch: p.micro_batch,
            recompute: p.recompute,
        };
        let trace = headroom::schedule::planner::simulated_trace(
            &model,
            opt,
            &cfg,
            choice,
            Some(budget_bytes),
        )?;
        // stderr: stdout may be the --json answer.
        let line = save_trace(&trace, path, "--memory-trace", &[])?;
        eprintln!("simulated {line}");
    }
    match (r, a.json) {
        (Ok(p), true) => {
            let mut v = serde_json::to_value(&p).map_err(|e| Error::Internal(e.to_string()))?;
            v["fits"] = json!(true);
            v["model"] = json!(a.model);
            v["params"] = json!(model.num_params());
            v["plan_seconds"] = json!(secs);
            println!("{v}");
            Ok(())
        }
        (Ok(p), false) => {
            println!("{} ({} parameters)", a.model, model.num_params());
            print!("{}", plan_text(&p, a.verbose));
            println!("planned in {:.0} ms (simulation only)", secs * 1e3);
            Ok(())
        }
        (Err(e @ Error::NoPlanFits { .. }), true) => {
            let Error::NoPlanFits { budget, needed, .. } = &e else {
                unreachable!()
            };
            println!(
                "{}",
                json!({"fits": false, "model": a.model, "budget_bytes": budget,
                       "needed_bytes": needed, "error": e.to_string(), "plan_seconds": secs})
            );
            Err(e)
        }
        (Err(e), _) => Err(e),
    }
}

fn sample(a: SampleArgs) -> Result<()> {
    let ck = headroom::checkpoint::open(&a.checkpoint)?;
    let m = &ck.manifest;
    let config: GptConfig =
        serde_json::from_value(m.model.clone()).map_err(|e| Error::CheckpointMismatch {
            path: ck.path.clone(),
            what: format!("its model is not a GPT this build knows ({e})"),
        })?;
    if !(a.temperature.is_finite() && a.temperature > 0.0) {
        return Err(Error::invalid("--temperature", "must be a positive number"));
    }
    // The run's own settings, so the checkpoint restores without complaint.
    let cfg = TrainConfig {
        batch: m.train.batch,
        seq_len: m.train.seq_len,
        steps: m.train.steps,
        seed: m.train.seed,
        warmup: Some(m.schedule.warmup),
        min_lr_ratio: m.schedule.min_ratio,
        precision: m.precision,
        ..TrainConfig::default()
    };
    // Sampling takes no training step, so it must not need the checkpoint's
    // training batch to fit this device: a fixed plan, no planning.
    let inference = headroom::schedule::Choice {
        micro_batch: 1,
        recompute: headroom::schedule::Recompute::None,
    };
    let mut trainer = Trainer::with_plan(
        Device::by_name(&a.backend)?,
        Gpt::new(config)?,
        m.optimizer,
        cfg,
        inference,
    )?;
    let path = ck.path.clone();
    let step = trainer.restore(ck)?;
    log::info!("sampling from {} (step {step})", path.display());
    let prompt = ByteTokenizer::encode(a.prompt.as_bytes());
    let mut rng = Rng::fork(a.seed, "sample");
    let ids = trainer.generate(&prompt, a.tokens, a.temperature, &mut rng)?;
    println!("{}{}", a.prompt, ByteTokenizer::decode(&ids));
    Ok(())
}

fn devices(a: DevicesArgs) -> Result<()> {
    let cpu = Device::cpu();
    let adapters = headroom::backend::wgpu::adapters();
    let best = Device::best()?.name();
    // GPU 0 if a driver answers; otherwise why not, in the user's terms.
    let cuda = Device::cuda().map(|d| (d.name().to_string(), d.total_memory()));
    if a.json {
        let cuda = match &cuda {
            Ok((name, bytes)) => json!({"name": name, "memory_bytes": bytes}),
            Err(e) => json!({"unavailable": e.to_string()}),
        };
        println!(
            "{}",
            json!({
                "best": best,
                "cpu": {"memory_bytes": cpu.total_memory(), "dtypes": ["f32", "f16", "bf16", "f64"]},
                "cuda": cuda,
                "wgpu": adapters,
            })
        );
        return Ok(());
    }
    println!(
        "cpu   host memory {}, f32 compute (f16/bf16 as storage)",
        format_bytes(cpu.total_memory())
    );
    match &cuda {
        Ok((name, bytes)) => println!("cuda  {name}, memory {}", format_bytes(*bytes)),
        Err(e) => println!("cuda  unavailable: {e}"),
    }
    for ad in &adapters {
        println!(
            "wgpu  {} ({}, {}), driver {}, shader f16 {}, max buffer {}, max binding {}",
            ad.name,
            ad.device_type,
            ad.backend,
            if ad.driver.is_empty() {
                "?"
            } else {
                &ad.driver
            },
            if ad.shader_f16 { "yes" } else { "no" },
            format_bytes(ad.max_buffer_bytes),
            format_bytes(ad.max_storage_binding_bytes)
        );
    }
    if adapters.is_empty() {
        println!("wgpu  no adapter (install a Vulkan driver; for CPUs: apt-get install mesa-vulkan-drivers)");
    }
    println!("--backend auto picks: {best}");
    Ok(())
}
