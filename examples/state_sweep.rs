//! Past the model-state floor, by simulation only: for a model whose weights,
//! gradients and AdamW state dominate (GPT-2 XL, 1558M parameters, bf16),
//! (1) the smallest device budget each lever set trains at, and (2) a budget
//! sweep from everything-on-device down to the smallest budget any lever set
//! fits, with the plan chosen at each budget and the time model's step time.
//!
//! cargo run --release --example state_sweep -- [--model gpt2-1558m] [--gpu rtx4090]
//!     [--batch 16] [--seq 1024] [--host-gib 64] [--smoke]

use headroom::graph::amp::Precision;
use headroom::memory::format_bytes;
use headroom::schedule::levers::{Levers, OptimizerState};
use headroom::schedule::{plan, simulate, Choice, Recompute};
use headroom::{AdamW, Error, Gpt, GptConfig, Result, TrainConfig};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let preset = arg("--model").unwrap_or(if smoke { "gpt2-124m" } else { "gpt2-1558m" }.into());
    let gpu = arg("--gpu").unwrap_or("rtx4090".into());
    let batch: usize = arg("--batch").map_or(if smoke { 2 } else { 16 }, |v| v.parse().unwrap());
    let seq: usize = arg("--seq").map_or(if smoke { 128 } else { 1024 }, |v| v.parse().unwrap());
    let host_gib: u64 = arg("--host-gib").map_or(64, |v| v.parse().unwrap());
    let mc = GptConfig::preset(&preset)?;
    let model = Gpt::new(mc.clone())?;
    // No clipping, so gradient release is a candidate too.
    let opt = AdamW {
        grad_clip: None,
        ..AdamW::new(mc.default_lr())
    };
    let cfg = TrainConfig {
        batch,
        seq_len: seq,
        precision: Precision::Bf16,
        optimizer_state: OptimizerState::Auto,
        host_budget_bytes: Some(host_gib << 30),
        gpu: Some(gpu.clone()),
        ..TrainConfig::default()
    };
    println!(
        "{preset} ({} parameters), batch {batch} × {seq}, bf16, host budget {host_gib} GiB, priced for {gpu}",
        model.num_params()
    );

    println!("\n(1) the smallest device budget each lever set trains at (micro-batch 1, the best recompute policy, weight copies on or off)\n");
    println!("| levers | smallest device peak | host pool | recompute |");
    println!("|---|---|---|---|");
    let policies = Recompute::candidates(mc.n_layer);
    for q8 in [false, true] {
        for host in [false, true] {
            for release in [false, true] {
                let levers = Levers {
                    offload_optimizer: host,
                    state_8bit: q8,
                    gradient_release: release,
                };
                let c = TrainConfig {
                    optimizer_state: if q8 {
                        OptimizerState::Q8
                    } else {
                        OptimizerState::F32
                    },
                    ..cfg.clone()
                };
                // Release needs the whole batch in one micro-batch.
                let mb = if release { batch } else { 1 };
                // With and without the weights' bf16 copies (the planner
                // drops them where they cost the fit).
                let runs: Vec<(Recompute, bool)> = policies
                    .iter()
                    .flat_map(|&pol| [(pol, true), (pol, false)])
                    .collect();
                let best = runs
                    .iter()
                    .map(|&(pol, copies)| {
                        let ch = Choice {
                            micro_batch: mb,
                            recompute: pol,
                            levers,
                        };
                        let c = TrainConfig {
                            weight_copies: copies,
                            ..c.clone()
                        };
                        simulate(&model, opt, &c, ch, None).map(|s| (s, pol))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .min_by_key(|(s, _)| s.peak_reserved)
                    .expect("policies");
                println!(
                    "| {levers}{} | {} | {} | {} |",
                    if release {
                        format!(" (micro-batch {batch})")
                    } else {
                        String::new()
                    },
                    format_bytes(best.0.peak_reserved),
                    format_bytes(best.0.host_peak_reserved),
                    best.1
                );
            }
        }
    }

    let top = plan(&model, opt, &cfg, u64::MAX / 4, &[])?.predicted_peak_bytes;
    let min = match plan(&model, opt, &cfg, 1 << 21, &[]) {
        Err(Error::NoPlanFits { needed, .. }) => needed,
        other => panic!("a 2 MiB budget cannot fit: {other:?}"),
    };
    println!(
        "\n(2) budget sweep from {} (everything on the device) down to {} (the smallest any plan needs)\n",
        format_bytes(top),
        format_bytes(min)
    );
    println!("| budget | micro-batch | recompute | levers | predicted peak | host | predicted step ms | tokens/s (est.) | plan s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let n = if smoke { 4 } else { 10 };
    for i in 0..n {
        let budget = top - (top - min) * i as u64 / (n - 1) as u64;
        let t = std::time::Instant::now();
        let p = plan(&model, opt, &cfg, budget, &[])?;
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} |",
            format_bytes(budget),
            p.micro_batch,
            p.recompute,
            p.levers,
            format_bytes(p.predicted_peak_bytes),
            format_bytes(p.host_peak_bytes),
            p.predicted_step_ms,
            p.predicted_tokens_per_s(),
            t.elapsed().as_secs_f64()
        );
        assert!(p.predicted_peak_bytes <= budget);
    }
    println!("\nstep times are the time model's estimates from spec-sheet figures (src/schedule/cost.rs), not measurements");
    Ok(())
}
