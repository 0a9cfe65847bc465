//! How long `plan` takes for every preset (simulation only: no weights), at
//! the batch and sequence of a typical run, under a 24 GiB budget and a 16 GiB host budget, f32 and bf16.
//!
//! cargo bench --bench planner

use std::time::Instant;

use headroom::schedule::plan;
use headroom::{AdamW, Error, Gpt, GptConfig, Precision, TrainConfig};

fn main() {
    println!("| preset | batch × seq | precision | plan ms | result |");
    println!("|---|---|---|---|---|");
    for (preset, batch, seq) in [
        ("tiny", 32, 64),
        ("gpt2-124m", 16, 1024),
        ("gpt2-350m", 16, 512),
        ("gpt2-774m", 8, 1024),
        ("gpt2-1558m", 16, 1024),
    ] {
        for precision in [Precision::F32, Precision::Bf16] {
            let model = Gpt::new(GptConfig::preset(preset).unwrap()).unwrap();
            let cfg = TrainConfig {
                batch,
                seq_len: seq,
                precision,
                // Fixed, so the table does not depend on this machine's free RAM.
                host_budget_bytes: Some(16 << 30),
                ..TrainConfig::default()
            };
            let t = Instant::now();
            let r = plan(&model, AdamW::new(6e-4), &cfg, 24 << 30, &[]);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let result = match r {
                Ok(p) => format!(
                    "micro-batch {}, {}, levers {}, {:.2} GiB (host {:.2} GiB)",
                    p.micro_batch,
                    p.recompute,
                    p.levers,
                    p.predicted_peak_bytes as f64 / (1u64 << 30) as f64,
                    p.host_peak_bytes as f64 / (1u64 << 30) as f64
                ),
                Err(Error::NoPlanFits { needed, .. }) => {
                    format!(
                        "does not fit: needs {:.2} GiB",
                        needed as f64 / (1u64 << 30) as f64
                    )
                }
                Err(e) => format!("error: {e}"),
            };
            println!("| {preset} | {batch} × {seq} | {precision} | {ms:.0} | {result} |");
        }
    }
}
