//! `headroom train`: every check that can be made is made before step 1, then
//! the step loop, with checkpoints whose failure costs at most the work since
//! the last good one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use headroom::checkpoint::{self, Checkpoint, CheckpointDir};
use headroom::data::{Dataset, Split, Tokenizer};
use headroom::memory::format_bytes;
use headroom::nn::{AnyModel, ModelConfig};
use headroom::output::{self, Input};
use headroom::rng::Rng;
use headroom::{AdamW, Error, Model, Precision, Result, TrainConfig, Trainer};

use super::{plan_text, resolve_budget, save_trace, step_config};
use crate::log_through;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Text or token file to train on (default: the bundled tinyshakespeare).
    /// A text is tokenized by --tokenizer (and cached next to it); llm.c's
    /// .bin shards and .npy arrays of uint16/uint32 ids are read as they are.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation data in a file of its own (else the last tenth of --data).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// How text becomes ids: bytes, gpt2 (GPT-2's BPE, offline), or the path
    /// of a Hugging Face tokenizer.json.
    #[arg(long, default_value = "bytes")]
    pub tokenizer: String,
    /// The model's vocabulary (default: the preset's); must hold every id of
    /// the tokenizer and the data.
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Model preset: tiny, gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1558m (GPT-2);
    /// llama-tiny, smollm-135m, tinyllama-1.1b (Llama).
    #[arg(long)]
    pub model: Option<String>,
    /// Start from a Hugging Face checkpoint (a directory with config.json and
    /// model.safetensors or its sharded index): GPT-2 or Llama, whose
    /// config.json gives the model (no --model then).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Backend: auto, cpu, cuda or wgpu.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per sequence (default: the model's context).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Peak learning rate (default: the preset's).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate validation loss every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Write one JSON line per step and per evaluation to FILE.
    #[arg(long)]
    pub metrics_out: Option<PathBuf>,
    /// Most memory the run may reserve: 24GiB, 512MiB, 1.5GB, 90% (of the device,
    /// the default) or bytes. The planner fits each step inside it.
    #[arg(long)]
    pub budget: Option<String>,
    /// Record every allocation and free (tagged by op and phase) as JSON in FILE.
    #[arg(long)]
    pub memory_trace: Option<PathBuf>,
    /// Activation precision: f32, bf16, f16 (with loss scaling) or auto (the
    /// backend's best; f32 on cpu, which only stores low precision).
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Save checkpoints into DIR (at the end, every --checkpoint-every steps, and on Ctrl-C).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Steps between checkpoints (0: only at the end and on Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    /// How many checkpoints to keep in --checkpoint-dir.
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Continue from the newest valid checkpoint in --checkpoint-dir.
    #[arg(long)]
    pub resume: bool,
    /// Bytes to generate after training.
    #[arg(long, default_value_t = 200)]
    pub sample_tokens: usize,
    /// With --resume: continue on a --data file other than the one the
    /// checkpoint was trained on (refused otherwise).
    #[arg(long)]
    pub allow_data_change: bool,
    /// Print every candidate plan, the untried ones too.
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub levers: super::LeverArgs,
}

/// The metrics file: one JSON line per step and per evaluation.
struct Metrics(Option<(PathBuf, BufWriter<File>)>);

impl Metrics {
    /// Opens the file (after [`output::preflight`]), appending when a run
    /// resumes, and marks where the resumed run begins.
    fn open(path: Option<&PathBuf>, inputs: &[Input], resumed_at: Option<u64>) -> Result<Metrics> {
        let Some(p) = path else {
            return Ok(Metrics(None));
        };
        let f = output::open_stream(p, "--metrics-out", inputs, resumed_at.is_some())?;
        let mut m = Metrics(Some((p.clone(), BufWriter::new(f))));
        if let Some(step) = resumed_at {
            m.line(json!({ "resumed_at_step": step }))?;
        }
        Ok(m)
    }

    fn line(&mut self, v: serde_json::Value) -> Result<()> {
        if let Some((path, w)) = &mut self.0 {
            writeln!(w, "{v}")
                .and_then(|_| w.flush())
                .map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Periodic saves that fail (a full disk, an I/O error) warn and leave the
/// previous checkpoint in place; two in a row stop the run.
struct Saver {
    dir: Option<CheckpointDir>,
    keep: usize,
    /// The newest checkpoint known to be complete (this run's, or the one it
    /// resumed from).
    last_good: Option<PathBuf>,
    failures_in_a_row: u32,
}

impl Saver {
    fn newest(&self) -> String {
        match &self.last_good {
            Some(p) => format!(
                "the newest valid checkpoint is {}; resume from it with --resume",
                p.display()
            ),
            None => "no checkpoint of this run was saved".into(),
        }
    }

    /// Saves the trainer's state. `must` (the final save, or on Ctrl-C): a
    /// failure is an error. Otherwise the first failure only warns.
    fn save(&mut self, trainer: &mut Trainer<AnyModel>, must: bool) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let step = trainer.steps_done();
        let path = dir.path_for(step);
        match trainer.save_checkpoint(&path) {
            Ok(()) => {
                if let Err(e) = checkpoint::prune(dir.path(), self.keep) {
                    log::warn!(
                        "saved {}, but pruning older checkpoints failed: {e}",
                        path.display()
                    );
                }
                log::info!("saved checkpoint {}", path.display());
                self.last_good = Some(path);
                self.failures_in_a_row = 0;
                Ok(())
            }
            Err(e) => {
                self.failures_in_a_row += 1;
                if must || self.failures_in_a_row >= 2 {
                    return Err(Error::CheckpointFailed {
                        step,
                        why: e.to_string(),
                        newest: self.newest(),
                    });
                }
                log::warn!(
                    "saving the checkpoint of step {step} failed ({e}); {}. Training continues; a second failure in a row stops the run.",
                    self.newest()
                );
                Ok(())
            }
        }
    }
}

/// Refuses a resume on other data than the checkpoint's, unless asked to.
fn check_same_data(ck: &Checkpoint, data: &Dataset, allow: bool) -> Result<()> {
    let Some(saved) = &ck.manifest.data else {
        return Ok(());
    };
    let now = data.len(Split::Train);
    let same = match &saved.sha256 {
        // The bytes decide: a moved file is the same data, an edited one is not.
        Some(sum) => sum == data.fingerprint(),
        // Checkpoints from before the fingerprint: the file and its size.
        None => {
            let canonical = |p: &str| std::fs::canonicalize(p).ok();
            let same_file = saved.name == data.name
                || canonical(&saved.name).is_some_and(|c| Some(c) == canonical(&data.name));
            same_file && saved.train_bytes == now
        }
    };
    if same {
        return Ok(());
    }
    let what = format!(
        "it was trained on {} ({} training bytes), this run reads {} ({now}, other contents)",
        saved.name, saved.train_bytes, data.name
    );
    if allow {
        log::warn!("{what}; continuing on the new data (--allow-data-change)");
        return Ok(());
    }
    Err(Error::CheckpointMismatch {
        path: ck.path.clone(),
        what: format!(
            "{what}; pass the same --data, or --allow-data-change to continue on the new data"
        ),
    })
}

/// A `--data` file inside one of the checkpoints in `existing` would be
/// deleted when that checkpoint is pruned.
fn check_data_outside_checkpoints(data: &Path, existing: &[(u64, PathBuf)]) -> Result<()> {
    for (_, ck) in existing {
        if output::inside(data, ck) {
            return Err(Error::invalid(
                "--data",
                format!(
                    "{} lies inside the checkpoint {}, which is deleted when newer checkpoints replace it; move the data file out of --checkpoint-dir",
                    data.display(),
                    ck.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The checkpoint directory, checked and locked, with a warning when its free
/// space cannot hold `--keep-checkpoints` and the save in progress.
fn open_checkpoint_dir(a: &TrainArgs, d: &Path, model: &AnyModel) -> Result<CheckpointDir> {
    let bytes = checkpoint::estimated_bytes(model.num_params(), model.param_specs().len());
    let dir = CheckpointDir::open(d, bytes)?;
    let want = a.keep_checkpoints.max(1) as u64 + 1;
    if let Some(room) = dir.room_for(bytes).filter(|r| *r < want) {
        log::warn!(
            "{} has room for {room} checkpoints of {}; --keep-checkpoints {} needs {want} during a save. A save that runs out of space is skipped with a warning; free space or lower --keep-checkpoints",
            d.display(),
            format_bytes(bytes),
            a.keep_checkpoints
        );
    }
    Ok(dir)
}

/// The newest valid checkpoint in `dir`, with `train`'s advice when none is.
fn latest(dir: &CheckpointDir) -> Result<Option<Checkpoint>> {
    checkpoint::latest_valid(dir.path()).map_err(|e| match e {
        Error::NoValidCheckpoint { dir, tried, last } => Error::NoValidCheckpoint {
            dir,
            tried,
            last: format!("{last}; start without --resume or point --checkpoint-dir elsewhere"),
        },
        e => e,
    })
}

pub fn train(a: TrainArgs) -> Result<()> {
    // Everything that can be checked is checked here, before any weight exists
    // and before anything is created on disk.
    let pretrained = match (&a.init_from, &a.model) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "--model",
                "--init-from's config.json gives the model; drop --model",
            ))
        }
        (Some(p), None) => Some(headroom::nn::hf::load(p)?),
        (None, _) => None,
    };
    let model_name = a.model.clone().unwrap_or_else(|| match &a.init_from {
        Some(p) => p.display().to_string(),
        None => "tiny".into(),
    });
    let mut config = match &pretrained {
        Some(p) => p.config.clone(),
        None => ModelConfig::preset(&model_name)?,
    };
    if let Some(v) = a.vocab {
        config.set_vocab_size(v)?;
    }
    let seq = a.seq.unwrap_or(config.block_size());
    let precision: Precision = a.precision.parse()?;
    let mut asked = TrainConfig {
        batch: a.batch,
        seq_len: seq,
        steps: a.steps,
        seed: a.seed,
        precision,
        ..TrainConfig::default()
    };
    asked.validate(config.block_size())?;
    if a.resume && a.checkpoint_dir.is_none() {
        return Err(Error::invalid(
            "--resume",
            "needs --checkpoint-dir DIR to resume from",
        ));
    }
    let data = load_data(&a, &model_name, config.vocab_size())?;
    data.check_seq(seq)?;
    let mut device = headroom::Device::by_name(&a.backend)?;
    let lr = a.lr.unwrap_or(config.default_lr());
    let mut opt = AdamW::new(lr);
    let gpu = a.levers.apply(&mut asked, &mut opt)?;
    let budget_text = a.budget.as_deref().unwrap_or("90%");
    let budget_bytes = match gpu {
        Some(g) => super::resolve_gpu_budget(&mut device, budget_text, g)?,
        None => resolve_budget(&mut device, budget_text)?,
    };
    let model = config.build()?;
    let mut inputs: Vec<Input> = a
        .data
        .iter()
        .map(|p| Input::new("--data file", p))
        .chain(a.val_data.iter().map(|p| Input::new("--val-data file", p)))
        .chain(
            a.init_from
                .iter()
                .map(|p| Input::new("--init-from checkpoint", p)),
        )
        .collect();
    let ck_dir = match &a.checkpoint_dir {
        Some(d) => Some(open_checkpoint_dir(&a, d, &model)?),
        None => None,
    };
    let resumed = match &ck_dir {
        Some(dir) => {
            let existing = checkpoint::list(dir.path())?;
            for data in a.data.iter().chain(&a.val_data) {
                check_data_outside_checkpoints(data, &existing)?;
            }
            if !a.resume {
                if let Some((step, _)) = existing.first() {
                    return Err(Error::CheckpointDir {
                        dir: dir.path().to_path_buf(),
                        why: format!(
                            "it holds checkpoints of an earlier run (the newest at step {step}), which this run's saves would prune; pass --resume to continue that run, or give an empty directory"
                        ),
                    });
                }
            }
            // Every checkpoint there is an input: no output may land inside one.
            for (_, p) in &existing {
                inputs.push(Input::new("checkpoint in --checkpoint-dir", p));
            }
            match a.resume {
                true => latest(dir)?,
                false => None,
            }
        }
        None => None,
    };
    if let Some(ck) = &resumed {
        if ck.manifest.step >= a.steps && ck.manifest.model == model.describe() {
            println!(
                "{} already holds step {} of this run (--steps {}): nothing to train. Raise --steps to train further.",
                ck.path.display(),
                ck.manifest.step,
                a.steps
            );
            return Ok(());
        }
        check_same_data(ck, &data, a.allow_data_change)?;
    }
    for (path, what) in [
        (&a.metrics_out, "--metrics-out"),
        (&a.memory_trace, "--memory-trace"),
    ] {
        if let Some(p) = path {
            output::preflight(p, what, &inputs)?;
        }
    }
    if let (Some(m), Some(t)) = (&a.metrics_out, &a.memory_trace) {
        if output::same_place(m, t)? {
            return Err(Error::invalid(
                "--memory-trace",
                "names the same file as --metrics-out; give each its own",
            ));
        }
    }

    let cfg = step_config(&device, asked);
    log::info!("memory budget {}", format_bytes(budget_bytes));
    if a.memory_trace.is_some() {
        device.start_trace();
    }
    log::info!(
        "model {} ({} parameters) on {}, data {} ({} train / {} val tokens)",
        model_name,
        model.num_params(),
        device.name(),
        data.name,
        data.len(Split::Train),
        data.len(Split::Val)
    );
    // Plans before it places a weight: a budget nothing fits fails here, with
    // what it would take.
    let mut trainer = Trainer::new(device, model, opt, cfg)?;
    let plan = trainer.plan()?;
    print!("{}", plan_text(plan, a.verbose));
    let resumed_at = match resumed {
        Some(ck) => {
            let path = ck.path.clone();
            let s = trainer.restore(ck)?;
            log::info!("resumed from {} (step {s})", path.display());
            Some((s, path))
        }
        None => {
            if a.resume {
                log::info!("no checkpoint in the --checkpoint-dir yet: starting from step 0");
            }
            if let (Some(p), Some(path)) = (&pretrained, &a.init_from) {
                trainer.set_weights(path, &p.weights)?;
                log::info!("weights from {}", path.display());
            }
            None
        }
    };
    // A resumed run appends, even when nothing was saved yet: the lines of a
    // run that died before its first checkpoint are kept.
    let marker = a.resume.then(|| resumed_at.as_ref().map_or(0, |r| r.0));
    let metrics = Metrics::open(a.metrics_out.as_ref(), &inputs, marker)?;
    let saver = Saver {
        dir: ck_dir,
        keep: a.keep_checkpoints,
        last_good: resumed_at.map(|r| r.1),
        failures_in_a_row: 0,
    };
    let interrupted = install_ctrl_c()?;
    let mut out = Outputs {
        metrics,
        saver,
        inputs,
    };
    run_steps(&a, &mut trainer, &data, &mut out, &interrupted, seq)
}

/// What a run writes, and the inputs (checked before step 1) that none of it
/// may overwrite.
struct Outputs {
    metrics: Metrics,
    saver: Saver,
    inputs: Vec<Input>,
}

fn run_steps(
    a: &TrainArgs,
    trainer: &mut Trainer<AnyModel>,
    data: &Dataset,
    out: &mut Outputs,
    interrupted: &AtomicBool,
    seq: usize,
) -> Result<()> {
    let Outputs {
        metrics,
        saver,
        inputs,
    } = out;
    let first = trainer.steps_done() + 1;
    let bar = ProgressBar::new(a.steps);
    bar.set_position(first - 1);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("static template"),
    );
    log_through(Some(bar.clone()));
    let start = Instant::now();
    let mut last_val = None;
    for s in first..=a.steps {
        if interrupted.load(Ordering::SeqCst) {
            bar.finish_and_clear();
            log_through(None);
            saver.save(trainer, true)?;
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
        let batch = trainer.next_batch(data)?;
        let r = trainer.step(&batch)?;
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
            let v = trainer.eval_loss(data)?;
            log::info!("step {s}: train loss {:.4}, val loss {v:.4}", r.loss);
            metrics.line(json!({"step": s, "val_loss": v}))?;
            last_val = Some(v);
        }
        if a.checkpoint_every > 0 && s % a.checkpoint_every == 0 && s != a.steps {
            saver.save(trainer, false)?;
        }
    }
    let final_save = saver.save(trainer, true);
    bar.finish_and_clear();
    log_through(None);
    let secs = start.elapsed().as_secs_f64();
    let steps_run = a.steps + 1 - first;
    let tokens = steps_run as usize * a.batch * seq;
    let resumed = match first {
        1 => String::new(),
        f => format!(" (resumed at step {})", f - 1),
    };
    println!(
        "trained {steps_run} steps{resumed} in {secs:.1} s ({:.0} tokens/s, {}); final val loss {:.4}; {} steps skipped, {} out-of-memory recoveries",
        tokens as f64 / secs,
        trainer.precision(),
        last_val.unwrap_or(f64::NAN),
        trainer.skipped_steps(),
        trainer.recoveries(),
    );
    print!("{}", trainer.memory_stats());
    if let Some(path) = &a.memory_trace {
        let trace = trainer
            .take_memory_trace()
            .ok_or_else(|| Error::Internal("the memory trace was not started".into()))?;
        println!("{}", save_trace(&trace, path, "--memory-trace", inputs)?);
    }
    final_save?;
    if a.sample_tokens > 0 {
        let tok = Tokenizer::from_arg(&a.tokenizer)?;
        let mut srng = Rng::fork(a.seed, "sample");
        let prompt = newline(&tok)?;
        let ids = trainer.generate(&prompt, a.sample_tokens, 0.8, &mut srng)?;
        println!("--- sample ---\n{}", tok.decode(&ids));
    }
    Ok(())
}

/// First Ctrl-C: finish the step, save, exit. Second: stop at once, removing the
/// temporary directory of a save in progress so nothing partial stays behind.
fn install_ctrl_c() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            checkpoint::in_progress::abandon();
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

/// The data of `--data` (and `--val-data`), tokenized by `--tokenizer`,
/// checked against a model of `vocab` ids: every id the tokenizer can make,
/// and every id in the data (one pass at open), below it.
fn load_data(a: &TrainArgs, model_name: &str, vocab: usize) -> Result<Dataset> {
    let tok = Tokenizer::from_arg(&a.tokenizer)?;
    let mut data = match &a.data {
        Some(p) => Dataset::open(p, &tok)?,
        None => Dataset::bundled_with(&tok)?,
    };
    if let Some(v) = &a.val_data {
        data = data.with_val(Dataset::open(v, &tok)?);
    }
    // A text is tokenized here: the model must hold every id the tokenizer
    // makes. A token file's ids were made elsewhere (the tokenizer only
    // decodes samples), so its ids alone are checked.
    if data.tokenizer != "token file" && tok.vocab_size() > vocab {
        return Err(Error::invalid(
            "--tokenizer",
            format!(
                "{} has {} ids and the model {model_name} a vocabulary of {vocab}; pass --vocab {} (or a preset of that vocabulary), or another --tokenizer",
                tok.name(),
                tok.vocab_size(),
                tok.vocab_size()
            ),
        ));
    }
    data.check_vocab(vocab)?;
    Ok(data)
}

/// A one-token prompt: the tokenizer's id of a newline.
pub(crate) fn newline(tok: &Tokenizer) -> Result<Vec<i32>> {
    let ids = tok.encode("the prompt", b"\n")?;
    Ok(ids.into_iter().map(|i| i as i32).collect())
}
