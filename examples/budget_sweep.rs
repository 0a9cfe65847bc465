//! Budget sweep: the same training run under budgets from "everything fits" down
//! to the smallest that works. Each run's losses are compared with the
//! unconstrained run's, and its step time with the FLOPs its plan pays for.
//!
//! cargo run --release --example budget_sweep -- [--steps N] [--batch B] [--seq T] [--smoke]

use std::time::Instant;

use headroom::data::{Dataset, Split};
use headroom::memory::{format_bytes, Budget};
use headroom::rng::Rng;
use headroom::schedule::{plan, simulate, Choice, Recompute};
use headroom::{AdamW, Device, Gpt, GptConfig, Result, TrainConfig, Trainer};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let steps = arg("--steps", if smoke { 3 } else { 20 });
    let batch = arg("--batch", if smoke { 4 } else { 32 });
    let seq = arg("--seq", if smoke { 16 } else { 64 });
    let model_cfg = GptConfig::tiny();
    let cfg = TrainConfig {
        batch,
        seq_len: seq,
        steps: steps as u64,
        eval_batches: 1,
        ..TrainConfig::default()
    };
    let opt = AdamW::new(model_cfg.default_lr());
    let model = Gpt::new(model_cfg.clone())?;

    // The unconstrained peak and the smallest budget any plan fits in.
    let top = plan(&model, opt, &cfg, u64::MAX / 4, &[])?.predicted_peak_bytes;
    let min = match plan(&model, opt, &cfg, 1, &[]) {
        Err(headroom::Error::NoPlanFits { needed, .. }) => needed,
        other => panic!("a 1-byte budget cannot fit: {other:?}"),
    };
    let n = 6;
    let budgets: Vec<u64> = (0..n)
        .map(|i| top - (top - min) * i as u64 / (n - 1) as u64)
        .collect();

    let data = Dataset::bundled();
    let mut rng = Rng::new(5);
    let batches: Vec<_> = (0..steps)
        .map(|_| data.batch(Split::Train, &mut rng, batch, seq))
        .collect::<Result<_>>()?;

    println!("budget sweep: tiny GPT, batch {batch} × {seq}, {steps} steps each, cpu");
    println!("| budget | micro-batch | recompute | predicted peak | measured peak | GFLOP/step | median step ms | time ratio / FLOP ratio | step-1 loss diff | max loss diff |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut base: Option<(Vec<f32>, f64, u64)> = None;
    for b in budgets {
        let p = plan(&model, opt, &cfg, b, &[])?;
        let mut dev = Device::cpu();
        dev.set_budget(Some(Budget::Bytes(b)));
        let mut t = Trainer::new(dev, Gpt::new(model_cfg.clone())?, opt, cfg.clone())?;
        t.use_plan(p.clone());
        let mut losses = Vec::new();
        let mut times = Vec::new();
        for bt in &batches {
            let s = Instant::now();
            losses.push(t.step(bt)?.loss);
            times.push(s.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let measured = t.memory_stats().peak_reserved_bytes;
        assert!(measured <= b, "peak {measured} passed the budget {b}");
        let diff = base.as_ref().map_or(0.0, |(l, _, _)| {
            l.iter()
                .zip(&losses)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        });
        let first = base
            .as_ref()
            .map_or(0.0, |(l, _, _)| (l[0] - losses[0]).abs());
        let ratio = base.as_ref().map_or(1.0, |(_, ms, fl)| {
            (median / ms) / (p.flops_per_step as f64 / *fl as f64)
        });
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.2} | {:.1e} | {:.1e} |",
            format_bytes(b),
            p.micro_batch,
            p.recompute,
            format_bytes(p.predicted_peak_bytes),
            format_bytes(measured),
            p.flops_per_step as f64 / 1e9,
            median,
            ratio,
            first,
            diff
        );
        if base.is_none() {
            base = Some((losses, median, p.flops_per_step));
        }
    }
    if let Some((_, ms, flops)) = base {
        println!(
            "unconstrained: {ms:.1} ms/step for {:.2} GFLOP",
            flops as f64 / 1e9
        );
    }

    // What recompute alone costs: every policy at the full batch.
    println!();
    println!("recompute at micro-batch {batch}: step time against the FLOPs each policy pays for");
    println!(
        "| recompute | simulated peak | GFLOP/step | median step ms | time ratio | FLOP ratio |"
    );
    println!("|---|---|---|---|---|---|");
    let mut first: Option<(f64, u64)> = None;
    for pol in [
        Recompute::None,
        Recompute::Cheap,
        Recompute::Every(2),
        Recompute::Every(1),
    ] {
        let choice = Choice {
            micro_batch: batch,
            recompute: pol,
            levers: Default::default(),
        };
        let sim = simulate(&model, opt, &cfg, choice, None)?;
        let mut t = Trainer::with_plan(
            Device::cpu(),
            Gpt::new(model_cfg.clone())?,
            opt,
            cfg.clone(),
            choice,
        )?;
        let mut times = Vec::new();
        for bt in &batches {
            let s = Instant::now();
            t.step(bt)?;
            times.push(s.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let flops = headroom::schedule::planner::step_flops(&model, &cfg, choice)?;
        let (ms0, fl0) = *first.get_or_insert((median, flops));
        println!(
            "| {pol} | {} | {:.2} | {median:.1} | {:.2} | {:.2} |",
            format_bytes(sim.peak_reserved),
            flops as f64 / 1e9,
            median / ms0,
            flops as f64 / fl0 as f64
        );
    }
    Ok(())
}
