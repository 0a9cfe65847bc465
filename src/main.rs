//! The `headroom` command line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use headroom::data::{ByteTokenizer, Dataset, Split};
use headroom::rng::Rng;
use headroom::{AdamW, Device, Error, Gpt, GptConfig, Result, TrainConfig, Trainer};

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
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Text file to train on (any bytes; default: the bundled tinyshakespeare).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model preset: tiny, gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1558m.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Backend: auto or cpu.
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
    /// Bytes to generate after training.
    #[arg(long, default_value_t = 200)]
    sample_tokens: usize,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Train(a) => train(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Metrics(Option<BufWriter<File>>);

impl Metrics {
    fn open(path: Option<&PathBuf>) -> Result<Metrics> {
        Ok(Metrics(match path {
            Some(p) => Some(BufWriter::new(File::create(p).map_err(|source| {
                Error::Io {
                    path: p.clone(),
                    source,
                }
            })?)),
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
    let cfg = TrainConfig {
        batch: a.batch,
        seq_len: seq,
        steps: a.steps,
        seed: a.seed,
        ..TrainConfig::default()
    };
    cfg.validate(config.block_size)?;
    data.check_seq(seq)?;
    let lr = a.lr.unwrap_or(config.default_lr());
    let device = Device::by_name(&a.backend)?;
    let model = Gpt::new(config.clone())?;
    log::info!(
        "model {} ({} parameters) on {}, data {} ({} train / {} val bytes)",
        a.model,
        model.num_params(),
        device.name(),
        data.name,
        data.len(Split::Train),
        data.len(Split::Val)
    );
    let mut metrics = Metrics::open(a.metrics_out.as_ref())?;
    let mut trainer = Trainer::new(device, model, AdamW::new(lr), cfg)?;

    let bar = ProgressBar::new(a.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("static template"),
    );
    let mut rng = Rng::fork(a.seed, "train-data");
    let start = Instant::now();
    let mut tokens = 0usize;
    let mut last_val = None;
    for s in 1..=a.steps {
        let batch = data.batch(Split::Train, &mut rng, a.batch, seq)?;
        let r = trainer.step(&batch)?;
        tokens += a.batch * seq;
        bar.set_message(format!("loss {:.4}  {:.0} tok/s", r.loss, r.tokens_per_s));
        bar.inc(1);
        metrics.line(json!({
            "step": r.step, "loss": r.loss, "lr": r.lr, "tokens_per_s": r.tokens_per_s,
            "grad_norm": r.grad_norm, "skipped": r.skipped,
            "allocated_bytes": r.memory.allocated_bytes,
            "peak_allocated_bytes": r.memory.peak_allocated_bytes,
        }))?;
        if (a.eval_every > 0 && s % a.eval_every == 0) || s == a.steps {
            let v = trainer.eval_loss(&data)?;
            bar.suspend(|| log::info!("step {s}: train loss {:.4}, val loss {v:.4}", r.loss));
            metrics.line(json!({"step": s, "val_loss": v}))?;
            last_val = Some(v);
        }
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let mem = trainer.memory_stats();
    println!(
        "trained {} steps in {secs:.1} s ({:.0} tokens/s); final val loss {:.4}; peak memory {:.1} MiB",
        a.steps,
        tokens as f64 / secs,
        last_val.unwrap_or(f64::NAN),
        mem.peak_allocated_bytes as f64 / (1 << 20) as f64
    );
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
