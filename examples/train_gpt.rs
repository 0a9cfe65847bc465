//! Train a GPT-2 on your card without an out-of-memory at 80%: the best backend,
//! a budget the planner fits every step into, mixed precision, periodic atomic
//! checkpoints and `--resume`. At the end: the memory table and an SVG timeline
//! of the last step.
//!
//! cargo run --release --example train_gpt -- --model gpt2-350m --budget 24GiB \
//!     --precision auto --data FILE
//! cargo run --release --example train_gpt -- --smoke      # tiny, cpu, 3 steps
//! cargo run --release --example train_gpt -- --smoke --checkpoint-dir ck --steps 6 --resume

use std::path::PathBuf;

use clap::Parser;
use headroom::checkpoint::{self, CheckpointDir};
use headroom::data::Dataset;
use headroom::memory::{format_bytes, Budget};
use headroom::{AdamW, Device, Gpt, GptConfig, Model, Precision, Result, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
struct Args {
    /// tiny, gpt2-124m, gpt2-350m, gpt2-774m or gpt2-1558m
    #[arg(long, default_value = "gpt2-124m")]
    model: String,
    /// Most memory the run may reserve: 24GiB, 90%, …
    #[arg(long, default_value = "90%")]
    budget: String,
    /// f32, bf16, f16 or auto (the backend's fastest)
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Training text (bytes are tokens); the bundled Shakespeare by default
    #[arg(long)]
    data: Option<PathBuf>,
    /// auto, cuda, wgpu or cpu
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Optimizer steps in all (1000; 3 with --smoke)
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens per sequence; the model's context by default
    #[arg(long)]
    seq: Option<usize>,
    /// Where checkpoints and the timeline go (checkpoints/; a temporary one with --smoke)
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Continue from the newest valid checkpoint in --checkpoint-dir
    #[arg(long)]
    resume: bool,
    /// The tiny model on cpu with batch 4, for CI
    #[arg(long)]
    smoke: bool,
}

fn main() -> Result<()> {
    env_logger::init();
    let mut a = Args::parse();
    if a.smoke {
        (a.model, a.backend, a.batch, a.checkpoint_every) = ("tiny".into(), "cpu".into(), 4, 2);
    }
    let steps = a.steps.unwrap_or(if a.smoke { 3 } else { 1000 });
    let dir = a.checkpoint_dir.clone().unwrap_or_else(|| match a.smoke {
        true => std::env::temp_dir().join(format!("train_gpt-{}", std::process::id())),
        false => "checkpoints".into(),
    });
    let gc = GptConfig::preset(&a.model)?;
    let data = match &a.data {
        Some(p) => Dataset::load(p)?,
        None => Dataset::bundled(),
    };
    let model = Gpt::new(gc.clone())?;
    // Before any weight exists: the directory takes files, has room for two
    // checkpoints, and no other run writes it (the lock lives as long as `ck`).
    let ck = CheckpointDir::open(
        &dir,
        checkpoint::estimated_bytes(model.num_params(), model.param_specs().len()),
    )?;
    let mut device = Device::by_name(&a.backend)?;
    let budget = device.set_budget(Some(Budget::parse(&a.budget)?));
    let precision: Precision = a.precision.parse()?;
    let cfg = TrainConfig {
        batch: a.batch,
        seq_len: a.seq.unwrap_or(gc.block_size),
        steps,
        precision: precision.resolve(device.preferred_low_precision()),
        workspace_bytes: device.workspace_bytes(),
        ..TrainConfig::default()
    };
    println!(
        "{} on {}, budget {}",
        a.model,
        device.name(),
        format_bytes(budget)
    );
    // Plans before it places a weight: fails here, with what it would take,
    // if nothing fits the budget.
    let mut trainer = Trainer::new(device, model, AdamW::new(gc.default_lr()), cfg)?;
    print!("{}", trainer.plan()?);
    if a.resume {
        if let Some(ck) = checkpoint::latest_valid(&dir)? {
            println!("resumed at step {}", trainer.restore(ck)?);
        }
    }

    let bar = ProgressBar::new(steps).with_position(trainer.steps_done());
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{eta}] {msg}").unwrap());
    for s in trainer.steps_done() + 1..=steps {
        if s == steps {
            trainer.device_mut().start_trace(); // the last step's timeline
        }
        let batch = trainer.next_batch(&data)?;
        let r = trainer.step(&batch)?;
        bar.set_message(format!("loss {:.3}  {:.0} tok/s", r.loss, r.tokens_per_s));
        bar.inc(1);
        if s % a.checkpoint_every == 0 || s == steps {
            // Written to a temporary directory and renamed: a crash never
            // leaves half a checkpoint.
            bar.suspend(|| trainer.save_checkpoint(ck.path_for(s)))?;
            checkpoint::prune(ck.path(), 3)?;
        }
    }
    bar.finish();

    print!("{}", trainer.memory_stats());
    let temporary = a.smoke && a.checkpoint_dir.is_none();
    if let Some(trace) = trainer.take_memory_trace() {
        let svg = dir.join("memory-timeline.svg");
        headroom::report::render_svg(&trace, &svg, &[])?;
        if !temporary {
            println!("memory timeline of the last step: {}", svg.display());
        }
    }
    if temporary {
        // A temporary directory of its own: nothing to resume from later.
        drop(ck);
        std::fs::remove_dir_all(&dir).ok();
        println!("smoke run done (its temporary checkpoints are removed)");
    } else {
        println!(
            "checkpoints in {} (rerun with --resume to continue)",
            dir.display()
        );
    }
    Ok(())
}
