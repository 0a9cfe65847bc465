//! Checkpoint save and load throughput (MB/s) for a GPT-2 preset on the cpu
//! backend, and the checkpoint left on disk for other tools to read.
//!
//! cargo run --release --example checkpoint_io -- [--model gpt2-124m] [--out DIR] [--smoke]

use std::time::Instant;

use headroom::checkpoint;
use headroom::{AdamW, Device, Gpt, GptConfig, Precision, Result, TrainConfig, Trainer};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let preset = arg("--model").unwrap_or_else(|| {
        if smoke {
            "tiny".into()
        } else {
            "gpt2-124m".into()
        }
    });
    let out = std::path::PathBuf::from(arg("--out").unwrap_or_else(|| {
        std::env::temp_dir()
            .join("headroom-checkpoint-io")
            .display()
            .to_string()
    }));
    let config = GptConfig::preset(&preset)?;
    let cfg = TrainConfig {
        batch: 1,
        seq_len: 64.min(config.block_size),
        precision: Precision::F32,
        ..TrainConfig::default()
    };
    let model = Gpt::new(config.clone())?;
    let n = model.num_params();
    let t0 = Instant::now();
    let mut t = Trainer::new(Device::cpu(), model, AdamW::new(6e-4), cfg.clone())?;
    println!(
        "{preset}: {n} parameters, initialised in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let path = out.join(checkpoint::name_for(0));
    let t1 = Instant::now();
    t.save_checkpoint(&path)?;
    let save_s = t1.elapsed().as_secs_f64();
    let bytes = dir_bytes(&path) as f64;

    let mut u = Trainer::new(Device::cpu(), Gpt::new(config)?, AdamW::new(6e-4), cfg)?;
    let t2 = Instant::now();
    u.resume(&path)?;
    let load_s = t2.elapsed().as_secs_f64();
    assert!(
        u.parameters()? == t.parameters()?,
        "the loaded weights are the saved ones"
    );

    let mb = bytes / 1e6;
    println!("| checkpoint | size MB | save s | save MB/s | load s | load MB/s |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {preset} (weights + AdamW moments, f32) | {mb:.0} | {save_s:.2} | {:.0} | {load_s:.2} | {:.0} |",
        mb / save_s,
        mb / load_s
    );
    println!("(save and load include SHA-256 of every file and fsync; load includes verification and upload)");
    println!("checkpoint left at {}", path.display());
    Ok(())
}
