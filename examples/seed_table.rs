//! The four memory steps of a practitioner's out-of-memory checklist, measured
//! by headroom on whatever device runs it: the same model and batch with
//! (a) f32 and nothing else, (b) + recompute of every block, (c) + bf16/f16
//! (the device's own; bf16 storage on cpu),
//! (d) the planner's own choice under a budget. Peak memory and tokens/s.
//!
//! cargo run --release --example seed_table -- [--backend auto] [--model tiny]
//!     [--batch 32] [--seq 64] [--steps 6] [--smoke]

use std::time::Instant;

use headroom::data::Dataset;
use headroom::memory::{format_bytes, Budget};
use headroom::schedule::{plan, Choice, Plan, Recompute};
use headroom::{AdamW, Device, Gpt, GptConfig, Precision, Result, TrainConfig, Trainer};

fn arg(name: &str, default: &str) -> String {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

struct Row {
    name: String,
    plan: String,
    peak: u64,
    tokens_per_s: f64,
}

/// Trains `steps` steps with `choice` (or the planner's choice under `budget`)
/// and measures the median step and the peak reserved memory.
fn measure(
    backend: &str,
    gc: &GptConfig,
    cfg: &TrainConfig,
    how: Result<Choice, u64>,
    steps: usize,
) -> Result<(String, u64, f64)> {
    let mut dev = Device::by_name(backend)?;
    let opt = AdamW::new(gc.default_lr());
    let mut cfg = cfg.clone();
    cfg.precision = cfg.precision.resolve(dev.preferred_low_precision());
    cfg.workspace_bytes = dev.workspace_bytes();
    let model = Gpt::new(gc.clone())?;
    let mut t = match how {
        Ok(choice) => Trainer::with_plan(dev, model, opt, cfg.clone(), choice)?,
        Err(budget) => {
            dev.set_budget(Some(Budget::Bytes(budget)));
            let p: Plan = plan(&model, opt, &cfg, budget, &[])?;
            let mut t = Trainer::new(dev, model, opt, cfg.clone())?;
            t.use_plan(p);
            t
        }
    };
    let data = Dataset::bundled();
    let mut times = Vec::new();
    let mut last = None;
    for i in 0..steps + 1 {
        let b = t.next_batch(&data)?;
        let s = Instant::now();
        let r = t.step(&b)?;
        if i > 0 {
            times.push(s.elapsed().as_secs_f64());
        }
        last = Some(r);
    }
    times.sort_by(f64::total_cmp);
    let r = last.expect("at least one step");
    let plan = format!("{} / mb {} / {}", t.precision(), r.micro_batch, r.recompute);
    Ok((
        plan,
        t.memory_stats().peak_reserved_bytes,
        (cfg.batch * cfg.seq_len) as f64 / times[times.len() / 2],
    ))
}

/// Public so `benches/strategies.rs` runs the same table as a bench.
pub fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let backend = arg("--backend", "auto");
    let gc = GptConfig::preset(&arg("--model", "tiny"))?;
    let batch: usize = arg("--batch", if smoke { "8" } else { "32" })
        .parse()
        .unwrap_or(32);
    let seq: usize = arg("--seq", if smoke { "32" } else { "64" })
        .parse()
        .unwrap_or(64);
    let steps: usize = arg("--steps", if smoke { "2" } else { "6" })
        .parse()
        .unwrap_or(6);
    let base = TrainConfig {
        batch,
        seq_len: seq,
        steps: steps as u64 + 1,
        precision: Precision::F32,
        ..TrainConfig::default()
    };
    let full = Choice {
        micro_batch: batch,
        recompute: Recompute::None,
        levers: Default::default(),
    };
    let every = Choice {
        micro_batch: batch,
        recompute: Recompute::Every(1),
        levers: Default::default(),
    };
    // The device's own low precision; bf16 storage where it has none (cpu).
    let low_p = match Precision::Auto.resolve(Device::by_name(&backend)?.preferred_low_precision())
    {
        Precision::F32 => Precision::Bf16,
        p => p,
    };
    let low = TrainConfig {
        precision: low_p,
        ..base.clone()
    };
    let mut rows = Vec::new();
    let (p, peak, tps) = measure(&backend, &gc, &base, Ok(full), steps)?;
    rows.push(Row {
        name: "(a) f32, nothing else".into(),
        plan: p,
        peak,
        tokens_per_s: tps,
    });
    let (p, peak_b, tps) = measure(&backend, &gc, &base, Ok(every), steps)?;
    rows.push(Row {
        name: "(b) + recompute every block".into(),
        plan: p,
        peak: peak_b,
        tokens_per_s: tps,
    });
    let (p, peak_c, tps) = measure(&backend, &gc, &low, Ok(every), steps)?;
    rows.push(Row {
        name: format!("(c) + {low_p}"),
        plan: p,
        peak: peak_c,
        tokens_per_s: tps,
    });
    // (d): the planner alone, given a budget of 60% of (a)'s peak.
    let budget = peak * 6 / 10;
    let (p, peak_d, tps) = measure(&backend, &gc, &low, Err(budget), steps)?;
    rows.push(Row {
        name: format!("(d) planner under {}", format_bytes(budget)),
        plan: p,
        peak: peak_d,
        tokens_per_s: tps,
    });

    println!(
        "{} on {}, batch {batch} × {seq}",
        arg("--model", "tiny"),
        Device::by_name(&backend)?.name()
    );
    println!(
        "| step | precision / micro-batch / recompute | peak reserved | vs (a) | tokens/s | vs (a) |"
    );
    println!("|---|---|---|---|---|---|");
    let base_tps = rows[0].tokens_per_s;
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2}× | {:.0} | {:.2}× |",
            r.name,
            r.plan,
            format_bytes(r.peak),
            r.peak as f64 / peak as f64,
            r.tokens_per_s,
            r.tokens_per_s / base_tps
        );
    }
    Ok(())
}
