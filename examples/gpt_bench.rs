//! One GPT training benchmark on any backend: the planner's choice under a
//! budget, then median step time, tokens/s, and measured against predicted peak.
//! Random tokens (the step's cost does not depend on the text).
//!
//! cargo run --release --example gpt_bench -- --backend cuda --model gpt2-124m \
//!     --batch 16 --seq 1024 --precision bf16 [--budget 24GiB] [--steps 10] [--json]
//!     [--profile]    then 3 more steps timed per op (CUDA events), by family and phase
//!     [--max-batch]  the largest batch the planner fits under the budget with no
//!                    gradient accumulation (a simulation, not a run)
//! cargo run --release --example gpt_bench -- --smoke      (tiny, cpu: what CI runs)

use std::time::Instant;

use headroom::data::Batch;
use headroom::memory::{format_bytes, Budget};
use headroom::rng::Rng;
use headroom::schedule::plan;
use headroom::{AdamW, Device, Gpt, GptConfig, Precision, Result, TrainConfig, Trainer};

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let flag = |f: &str| std::env::args().any(|a| a == f);
    let (smoke, json, profile) = (flag("--smoke"), flag("--json"), flag("--profile"));
    let d = |k: &str, full: &str, small: &str| {
        arg(k).unwrap_or_else(|| if smoke { small } else { full }.to_string())
    };
    let backend = d("--backend", "auto", "cpu");
    let preset = d("--model", "gpt2-124m", "tiny");
    let batch: usize = d("--batch", "16", "4").parse().unwrap_or(16);
    let seq: usize = d("--seq", "1024", "32").parse().unwrap_or(1024);
    let steps: usize = d("--steps", "10", "3").parse().unwrap_or(10);
    let precision: Precision = d("--precision", "auto", "f32").parse()?;
    let budget = Budget::parse(&d("--budget", "90%", "90%"))?;

    let mut dev = Device::by_name(&backend)?;
    let budget_bytes = dev.set_budget(Some(budget));
    let config = GptConfig::preset(&preset)?;
    let cfg = TrainConfig {
        batch,
        seq_len: seq,
        steps: (steps + 2) as u64,
        precision: precision.resolve(dev.preferred_low_precision()),
        workspace_bytes: dev.workspace_bytes(),
        ..TrainConfig::default()
    };
    let model = Gpt::new(config.clone())?;
    let opt = AdamW::new(config.default_lr());
    let p = plan(&model, opt, &cfg, budget_bytes, &[])?;
    if !json {
        print!("{p}");
    }
    let max_batch = if flag("--max-batch") {
        Some(largest_full_batch(&model, opt, &cfg, budget_bytes)?)
    } else {
        None
    };
    let device_name = dev.name();
    let mut t = Trainer::new(dev, model, opt, cfg.clone())?;
    t.use_plan(p.clone());
    let mut rng = Rng::new(7);
    let v = config.vocab_size;
    let mut batch_of = || {
        let tokens = (0..batch * seq).map(|_| rng.below(v) as i32).collect();
        let targets = (0..batch * seq).map(|_| rng.below(v) as i32).collect();
        Batch::tokens(batch, seq, tokens, targets)
    };
    let mut times = Vec::new();
    let mut last = 0.0;
    for i in 0..steps + 2 {
        let b = batch_of();
        let s = Instant::now();
        last = t.step(&b)?.loss; // reads the loss back: the step has finished
        if i >= 2 {
            times.push(s.elapsed().as_secs_f64());
        }
    }
    // The per-op profile comes from steps of its own: its events must not
    // slow the steps that give tokens/s.
    let prof = if profile {
        const PROFILED: u64 = 3;
        t.device_mut().start_profile();
        for _ in 0..PROFILED {
            t.step(&batch_of())?;
        }
        t.device_mut().take_profile()?.map(|p| p.per(PROFILED))
    } else {
        None
    };
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    let m = t.memory_stats();
    let tok_s = (batch * seq) as f64 / med;
    let err = (p.predicted_peak_bytes as f64 - m.peak_reserved_bytes as f64)
        / m.peak_reserved_bytes as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "system": "headroom", "backend": device_name, "model": preset, "batch": batch, "seq": seq,
                "precision": t.precision().to_string(), "micro_batch": p.micro_batch,
                "recompute": p.recompute.to_string(), "step_ms": med * 1e3, "tokens_per_s": tok_s,
                "peak_reserved_bytes": m.peak_reserved_bytes, "peak_allocated_bytes": m.peak_allocated_bytes,
                "predicted_peak_bytes": p.predicted_peak_bytes, "last_loss": last,
                "largest_full_batch": max_batch,
                "profile": prof.as_ref().map(|p| serde_json::json!({
                    "by_family": p.by_family(), "ops": p.rows, "busy_ms": p.busy_ms(), "idle_ms": p.idle_ms,
                })),
            })
        );
    } else {
        println!(
            "{preset} on {device_name}, batch {batch} × {seq}, {}: {:.1} ms/step, {tok_s:.0} tokens/s; peak reserved {} (predicted {}, {:+.2}%), peak allocated {}",
            t.precision(),
            med * 1e3,
            format_bytes(m.peak_reserved_bytes),
            format_bytes(p.predicted_peak_bytes),
            err * 100.0,
            format_bytes(m.peak_allocated_bytes)
        );
        if let Some(b) = max_batch {
            println!("largest batch planned without accumulation under the budget: {b}");
        }
        match (profile, &prof) {
            (true, Some(p)) => print!("per step, by phase and op family:\n{p}"),
            (true, None) => println!("no profile: {device_name} keeps no timer"),
            _ => {}
        }
    }
    Ok(())
}

/// The largest batch whose plan under `budget` runs it in one micro-batch,
/// by doubling then bisecting on the planner's simulation (no step runs).
fn largest_full_batch(model: &Gpt, opt: AdamW, cfg: &TrainConfig, budget: u64) -> Result<usize> {
    let fits = |b: usize| -> Result<bool> {
        let c = TrainConfig {
            batch: b,
            ..cfg.clone()
        };
        Ok(plan(model, opt, &c, budget, &[]).is_ok_and(|p| p.micro_batch == b))
    };
    if !fits(1)? {
        return Ok(0);
    }
    let mut lo = 1;
    while lo < 4096 && fits(lo * 2)? {
        lo *= 2;
    }
    let mut hi = lo * 2; // does not fit (or is past the search's end)
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
