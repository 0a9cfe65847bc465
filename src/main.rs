//! The `headroom` command line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use headroom::data::{ByteTokenizer, Dataset, Split};
use headroom::memory::{format_bytes, Budget, Trace};
use headroom::rng::Rng;
use headroom::{AdamW, Device, Error, Gpt, GptConfig, Precision, Result, TrainConfig, Trainer};

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
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Train(a) => train(a),
        Command::Report(a) => report(a),
        Command::Plan(a) => plan(a),
        Command::Sample(a) => sample(a),
        Command::Devices(a) => devices(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted { .. }) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Metrics(Option<BufWriter<File>>);

impl Metrics {
    /// Creates the metrics file, or appends to it when a run resumes.
    fn open(path: Option<&PathBuf>, append: bool) -> Result<Metrics> {
        Ok(Metrics(match path {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(append)
                    .truncate(!append)
                    .open(p)
                    .map_err(|source| Error::Io {
                        path: p.clone(),
                        source,
                    })?;
                Some(BufWriter::new(f))
            }
            None => None,
        }))
    }
    fn line(&mut self, v: serde_json::Value) -> Result<()> {
        if let Some(w) = &mut self.0 {
            writeln!(w, "{v}")
                .and_then(|_| w.flush())
                .map_err(|source| Error::Io {
                    path: "--metrics-out".into(),
                    source,
                })?;
        }
        Ok(())
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let config = GptConfig::preset(&a.model)?;
    let data = match &a.data {
        Some(p) => Dataset::load(p)?,
        None => Dataset::bundled(),
    };
    let seq = a.seq.unwrap_or(config.block_size);
    let precision: Precision = a.precision.parse()?;
    let mut cfg = TrainConfig {
        batch: a.batch,
        seq_len: seq,
        steps: a.steps,
        seed: a.seed,
        precision,
        ..TrainConfig::default()
    };
    cfg.validate(config.block_size)?;
    data.check_seq(seq)?;
    let lr = a.lr.unwrap_or(config.default_lr());
    let budget = Budget::parse(a.budget.as_deref().unwrap_or("90%"))?;
    let mut device = Device::by_name(&a.backend)?;
    let budget_bytes = device.set_budget(Some(budget));
    cfg.precision = precision.resolve(device.preferred_low_precision());
    cfg.workspace_bytes = device.workspace_bytes();
    log::info!("memory budget {} ({budget})", format_bytes(budget_bytes));
    if a.memory_trace.is_some() {
        device.start_trace();
    }
    let model = Gpt::new(config.clone())?;
    let opt = AdamW::new(lr);
    // Planned before any weight exists: a budget nothing fits fails here, with
    // what it would take.
    let plan = headroom::schedule::plan(&model, opt, &cfg, budget_bytes, &[])?;
    print!("{plan}");
    log::info!(
        "model {} ({} parameters) on {}, data {} ({} train / {} val bytes)",
        a.model,
        model.num_params(),
        device.name(),
        data.name,
        data.len(Split::Train),
        data.len(Split::Val)
    );
    let mut trainer = Trainer::new(device, model, opt, cfg)?;
    trainer.use_plan(plan);
    if a.resume {
        let dir = a.checkpoint_dir.as_ref().ok_or_else(|| {
            Error::invalid("--resume", "needs --checkpoint-dir DIR to resume from")
        })?;
        match headroom::checkpoint::latest_valid(dir)? {
            Some(ck) => {
                let path = ck.path.clone();
                let s = trainer.restore(ck)?;
                log::info!("resumed from {} (step {s})", path.display());
            }
            None => log::info!(
                "no checkpoint in {} yet: starting from step 0",
                dir.display()
            ),
        }
    }
    let mut metrics = Metrics::open(a.metrics_out.as_ref(), a.resume)?;
    let interrupted = install_ctrl_c()?;
    let save = |trainer: &mut Trainer<Gpt>| -> Result<()> {
        if let Some(dir) = &a.checkpoint_dir {
            let path = dir.join(headroom::checkpoint::name_for(trainer.steps_done()));
            trainer.save_checkpoint(&path)?;
            headroom::checkpoint::prune(dir, a.keep_checkpoints)?;
            log::info!("saved checkpoint {}", path.display());
        }
        Ok(())
    };

    let first = trainer.steps_done() + 1;
    let bar = ProgressBar::new(a.steps);
    bar.set_position(first - 1);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("static template"),
    );
    let start = Instant::now();
    let mut tokens = 0usize;
    let mut last_val = None;
    for s in first..=a.steps {
        if interrupted.load(Ordering::SeqCst) {
            bar.finish_and_clear();
            save(&mut trainer)?;
            let how = match &a.checkpoint_dir {
                Some(d) => format!(
                    "resume with the same command plus --resume (checkpoint in {})",
                    d.display()
                ),
                None => "nothing was saved: pass --checkpoint-dir DIR to keep the state".into(),
            };
            eprintln!("interrupted after step {}; {how}", trainer.steps_done());
            return Err(Error::Interrupted {
                step: trainer.steps_done(),
            });
        }
        let batch = trainer.next_batch(&data)?;
        let r = trainer.step(&batch)?;
        tokens += a.batch * seq;
        bar.set_message(format!("loss {:.4}  {:.0} tok/s", r.loss, r.tokens_per_s));
        bar.inc(1);
        metrics.line(json!({
            "step": r.step, "loss": r.loss, "lr": r.lr, "tokens_per_s": r.tokens_per_s,
            "grad_norm": r.grad_norm, "skipped": r.skipped,
            "allocated_bytes": r.memory.allocated_bytes,
            "reserved_bytes": r.memory.reserved_bytes,
            "peak_allocated_bytes": r.memory.peak_allocated_bytes,
            "peak_reserved_bytes": r.memory.peak_reserved_bytes,
            "micro_batch": r.micro_batch,
            "recompute": r.recompute.to_string(),
            "predicted_peak_bytes": r.predicted_peak_bytes,
            "recoveries": r.recoveries,
            "precision": r.precision.to_string(),
            "loss_scale": r.loss_scale,
        }))?;
        if (a.eval_every > 0 && s % a.eval_every == 0) || s == a.steps {
            let v = trainer.eval_loss(&data)?;
            bar.suspend(|| log::info!("step {s}: train loss {:.4}, val loss {v:.4}", r.loss));
            metrics.line(json!({"step": s, "val_loss": v}))?;
            last_val = Some(v);
        }
        if a.checkpoint_every > 0 && s % a.checkpoint_every == 0 && s != a.steps {
            bar.suspend(|| save(&mut trainer))?;
        }
    }
    save(&mut trainer)?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let mem = trainer.memory_stats();
    println!(
        "trained {} steps in {secs:.1} s ({:.0} tokens/s, {}); final val loss {:.4}; {} steps skipped, {} out-of-memory recoveries",
        a.steps,
        tokens as f64 / secs,
        trainer.precision(),
        last_val.unwrap_or(f64::NAN),
        trainer.skipped_steps(),
        trainer.recoveries(),
    );
    print!("{mem}");
    if let Some(path) = &a.memory_trace {
        let trace = trainer
            .take_memory_trace()
            .ok_or_else(|| Error::Internal("the memory trace was not started".into()))?;
        println!("{}", save_trace(&trace, path, "memory trace")?);
    }
    if a.sample_tokens > 0 {
        let mut srng = Rng::fork(a.seed, "sample");
        let ids = trainer.generate(
            &ByteTokenizer::encode(b"\n"),
            a.sample_tokens,
            0.8,
            &mut srng,
        )?;
        println!("--- sample ---\n{}", ByteTokenizer::decode(&ids));
    }
    Ok(())
}

/// Writes `trace` as JSON (atomically) and says where, and how to draw it.
fn save_trace(trace: &Trace, path: &std::path::Path, what: &str) -> Result<String> {
    let json = serde_json::to_vec(trace).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(path, &json)?;
    Ok(format!(
        "{what}: {} ({} events); draw it with `headroom report {}`",
        path.display(),
        trace.events.len(),
        path.display()
    ))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place:
/// a reader never sees half a file.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn report(a: ReportArgs) -> Result<()> {
    let trace = headroom::report::select_step(&Trace::load(&a.trace)?, a.step)?;
    let an = headroom::report::render_svg(&trace, &a.out)?;
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
    let device = Device::by_name(&a.backend)?;
    let precision: Precision = a.precision.parse()?;
    let cfg = TrainConfig {
        batch: a.batch,
        seq_len: seq,
        precision: precision.resolve(device.preferred_low_precision()),
        workspace_bytes: device.workspace_bytes(),
        ..TrainConfig::default()
    };
    cfg.validate(config.block_size)?;
    let budget = Budget::parse(&a.budget)?;
    let total = device.total_memory();
    let budget_bytes = budget.resolve(total);
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
        eprintln!("{}", save_trace(&trace, path, "simulated memory trace")?);
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
            print!("{p}");
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

/// First Ctrl-C: finish the step, save, exit. Second: stop at once, removing the
/// temporary directory of a save in progress so nothing partial stays behind.
fn install_ctrl_c() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            headroom::checkpoint::in_progress::abandon();
            eprintln!("\nsecond Ctrl-C: stopping now");
            std::process::exit(130);
        }
        eprintln!(
            "\nCtrl-C: finishing this step, then saving and exiting (Ctrl-C again to stop at once)"
        );
    })
    .map_err(|e| Error::Internal(format!("cannot install the Ctrl-C handler: {e}")))?;
    Ok(flag)
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
    let mut trainer = Trainer::new(
        Device::by_name(&a.backend)?,
        Gpt::new(config)?,
        m.optimizer,
        cfg,
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
