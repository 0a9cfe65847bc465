//! `headroom export`: a checkpoint's weights in a format other tools load.

use std::path::PathBuf;

use headroom::nn::{hf, ModelConfig};
use headroom::{Error, Result};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A checkpoint directory, or a directory of them (the newest valid one).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The directory to create (it must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// hf: config.json + model.safetensors that Hugging Face transformers
    /// loads with from_pretrained.
    #[arg(long, default_value = "hf")]
    pub format: String,
}

pub fn export(a: ExportArgs) -> Result<()> {
    if a.format != "hf" {
        return Err(Error::invalid(
            "--format",
            format!("'{}'; hf is the format written", a.format),
        ));
    }
    let ck = headroom::checkpoint::open(&a.checkpoint)?;
    if headroom::output::inside(&a.out, &ck.path) {
        return Err(Error::invalid(
            "--out",
            "lies inside the checkpoint it exports; give a directory outside it",
        ));
    }
    let config = ModelConfig::from_description(&ck.manifest.model).map_err(|e| {
        Error::CheckpointMismatch {
            path: ck.path.clone(),
            what: format!("its model is not one this build exports ({e})"),
        }
    })?;
    // Checkpoints hold each parameter in its file shape (no vocabulary
    // padding), as Hugging Face does.
    hf::write(&a.out, &config, &ck.params)?;
    println!(
        "exported {} (step {}) to {} as Hugging Face safetensors",
        ck.path.display(),
        ck.manifest.step,
        a.out.display()
    );
    Ok(())
}
