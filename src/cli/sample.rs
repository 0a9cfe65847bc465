//! `headroom sample`: text from a checkpoint.

use std::path::PathBuf;

use headroom::data::ByteTokenizer;
use headroom::rng::Rng;
use headroom::{Device, Error, Gpt, GptConfig, Result, TrainConfig, Trainer};

#[derive(clap::Args)]
pub struct SampleArgs {
    /// A checkpoint directory, or a --checkpoint-dir (its newest valid checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "\n")]
    pub prompt: String,
    /// Tokens (bytes) to generate.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Backend: auto or cpu.
    #[arg(long, default_value = "auto")]
    pub backend: String,
}

pub fn sample(a: SampleArgs) -> Result<()> {
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
        levers: Default::default(),
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
