//! `headroom sample`: text from a checkpoint.

use std::path::PathBuf;

use headroom::data::Tokenizer;
use headroom::nn::ModelConfig;
use headroom::rng::Rng;
use headroom::{Device, Error, Result, TrainConfig, Trainer};

#[derive(clap::Args)]
pub struct SampleArgs {
    /// A checkpoint directory, or a --checkpoint-dir (its newest valid checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "\n")]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Softmax temperature; 0 decodes greedily (always the most likely token).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tokenizer: bytes, gpt2 or a tokenizer.json (default: the one the
    /// checkpoint's run used).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Backend: auto or cpu.
    #[arg(long, default_value = "auto")]
    pub backend: String,
}

pub fn sample(a: SampleArgs) -> Result<()> {
    let ck = headroom::checkpoint::open(&a.checkpoint)?;
    let m = &ck.manifest;
    let config =
        ModelConfig::from_description(&m.model).map_err(|e| Error::CheckpointMismatch {
            path: ck.path.clone(),
            what: format!("its model is not one this build knows ({e})"),
        })?;
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        return Err(Error::invalid(
            "--temperature",
            "must be 0 (greedy: the most likely token) or a positive number",
        ));
    }
    // The run's own tokenizer unless told otherwise; a run on a token file
    // has none recorded that can decode.
    let tok_name = match (&a.tokenizer, m.data.as_ref().and_then(|d| d.tokenizer.clone())) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) if t == "token file" => {
            return Err(Error::invalid(
                "--tokenizer",
                "the checkpoint was trained on a token file; name the tokenizer that made it (gpt2 or a tokenizer.json)",
            ))
        }
        (None, Some(t)) => t,
        (None, None) => "bytes".into(),
    };
    let tok = Tokenizer::from_arg(&tok_name)?;
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
        levers: Default::default(),
    };
    let mut trainer = Trainer::with_plan(
        Device::by_name(&a.backend)?,
        config.build()?,
        m.optimizer,
        cfg,
        inference,
    )?;
    let path = ck.path.clone();
    let step = trainer.restore(ck)?;
    log::info!("sampling from {} (step {step})", path.display());
    let prompt: Vec<i32> = tok
        .encode("--prompt", a.prompt.as_bytes())?
        .into_iter()
        .map(|i| i as i32)
        .collect();
    let mut rng = Rng::fork(a.seed, "sample");
    let ids = trainer.generate(&prompt, a.tokens, a.temperature, &mut rng)?;
    println!("{}{}", a.prompt, tok.decode(&ids));
    Ok(())
}
