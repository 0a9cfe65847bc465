//! Predicted against measured peak for every candidate plan of a preset on the
//! cpu backend: the planner's simulation and a real run of the same sequence
//! (setup, step, evaluation, step), each under a budget equal to the prediction.
//!
//! cargo run --release --example predict_check -- --model gpt2-124m --batch 2 --seq 32

use headroom::data::Batch;
use headroom::memory::{format_bytes, Budget};
use headroom::schedule::{simulate, Choice, Recompute};
use headroom::{AdamW, Device, Gpt, GptConfig, Precision, Result, TrainConfig, Trainer};

fn arg(name: &str, default: &str) -> String {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() -> Result<()> {
    let preset = arg("--model", "tiny");
    let batch: usize = arg("--batch", "4").parse().unwrap_or(4);
    let seq: usize = arg("--seq", "32").parse().unwrap_or(32);
    let config = GptConfig::preset(&preset)?;
    let cfg = TrainConfig {
        batch,
        seq_len: seq,
        eval_batches: 1,
        precision: Precision::F32,
        ..TrainConfig::default()
    };
    let opt = AdamW::new(1e-4);
    let b = Batch::tokens(
        batch,
        seq,
        (0..batch * seq).map(|i| (i % 256) as i32).collect(),
        (0..batch * seq).map(|i| ((i + 1) % 256) as i32).collect(),
    );
    println!("{preset}, batch {batch} × {seq}, cpu, f32");
    println!("| micro-batch | recompute | predicted | measured | error |");
    println!("|---|---|---|---|---|");
    let mut worst = 0f64;
    for mb in (1..=batch).rev().filter(|m| batch % m == 0) {
        for pol in [
            Recompute::None,
            Recompute::Cheap,
            Recompute::Every(4),
            Recompute::Every(2),
            Recompute::Every(1),
        ] {
            let choice = Choice {
                micro_batch: mb,
                recompute: pol,
                levers: Default::default(),
            };
            let model = Gpt::new(config.clone())?;
            let predicted = simulate(&model, opt, &cfg, choice, None)?.peak_reserved;
            let mut dev = Device::cpu();
            dev.set_budget(Some(Budget::Bytes(predicted)));
            let mut t = Trainer::with_plan(dev, model, opt, cfg.clone(), choice)?;
            t.step(&b)?;
            t.loss(&b)?;
            t.step(&b)?;
            let measured = t.memory_stats().peak_reserved_bytes;
            let err = (predicted as f64 - measured as f64).abs() / measured as f64;
            worst = worst.max(err);
            println!(
                "| {mb} | {pol} | {} | {} | {:.4}% |",
                format_bytes(predicted),
                format_bytes(measured),
                err * 100.0
            );
        }
    }
    println!("worst error {:.4}%", worst * 100.0);
    Ok(())
}
