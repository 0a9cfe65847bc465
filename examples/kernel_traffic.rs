//! Kernels launched and global-memory bytes moved per training step on cuda,
//! per op family: **computed**, not measured — from the host's launch plans and
//! the kernels' code (see `headroom::backend::cuda::traffic`), so it runs on
//! any machine. One micro-batch, no recompute, sm_80+ (tensor-core attention
//! where the shape allows).
//!
//! cargo run --release --example kernel_traffic -- [--model gpt2-124m]
//!     [--batch 16] [--seq 1024] [--precision bf16] [--json]

use std::collections::{BTreeMap, HashSet};

use headroom::backend::cuda::optim::{plan_adamw, plan_sum_squares, AdamWParam};
use headroom::backend::cuda::traffic::{op_traffic, Traffic};
use headroom::backend::AdamWStep;
use headroom::nn::Model;
use headroom::schedule::run::param_casts;
use headroom::schedule::step::{GraphKey, GraphKind, ProgramKey, StepCompiler};
use headroom::schedule::{Instr, Recompute};
use headroom::{Gpt, GptConfig, Precision, Result, Value};

fn arg(name: &str, default: &str) -> String {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() -> Result<()> {
    let preset = arg("--model", "gpt2-124m");
    let batch: usize = arg("--batch", "16").parse().unwrap_or(16);
    let seq: usize = arg("--seq", "1024").parse().unwrap_or(1024);
    let precision: Precision = arg("--precision", "bf16").parse()?;
    let model = Gpt::new(GptConfig::preset(&preset)?)?;
    let mut sc = StepCompiler::new(precision);
    let key = ProgramKey {
        graph: GraphKey {
            kind: GraphKind::Train,
            micro_batch: batch,
            seq,
        },
        recompute: Some(Recompute::None),
        accumulate: false,
        release: false,
    };
    let (sg, program) = sc.program(&model, key)?;
    let g = &sg.graph;
    // The weights' casts that their low-precision copies stand in for: the
    // runner binds these outputs, so the casts never launch.
    let copies = sc.low_copies(&model);
    let bound: HashSet<Value> = param_casts(g)
        .into_iter()
        .filter(|(name, _, dt)| copies.get(*name) == Some(dt))
        .map(|(_, v, _)| v)
        .collect();
    let mut by: BTreeMap<(&str, &str), Traffic> = BTreeMap::new();
    for instr in &program.instrs {
        let (Instr::Run(n) | Instr::Recompute(n)) = *instr else {
            continue;
        };
        let node = g.node(n);
        if node.outputs.iter().all(|o| bound.contains(o)) {
            continue;
        }
        let meta = |vs: &[headroom::Value]| -> Vec<_> {
            vs.iter().map(|&v| (g.shape(v), g.dtype(v))).collect()
        };
        let t = op_traffic(&node.op, &meta(&node.inputs), &meta(&node.outputs), true)?;
        let phase = match node.phase {
            headroom::graph::Phase::Forward => "forward",
            headroom::graph::Phase::Backward => "backward",
        };
        *by.entry((phase, node.op.family())).or_default() += t;
    }
    // The optimizer's two launches over every parameter: Σg² reads each
    // gradient; AdamW reads p, g, m, v and writes p, m, v (all f32) and the
    // low-precision copies.
    let specs = model.param_specs();
    let shapes: Vec<_> = specs.iter().map(|p| p.shape.clone()).collect();
    let refs: Vec<_> = shapes.iter().collect();
    let n_params: u64 = shapes.iter().map(|s| s.numel() as u64).sum();
    let copy_bytes: u64 = specs
        .iter()
        .filter_map(|p| {
            copies
                .get(&p.name)
                .map(|d| (p.shape.numel() * d.size_in_bytes()) as u64)
        })
        .sum();
    let step = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        t: 1,
        grad_scale: 1.0,
    };
    let with_decay: Vec<_> = refs
        .iter()
        .zip(&specs)
        .map(|(s, p)| AdamWParam {
            shape: s,
            decay: true,
            shadow: copies.get(&p.name).copied(),
        })
        .collect();
    *by.entry(("optimizer", "sum_squares")).or_default() += Traffic {
        launches: plan_sum_squares(&refs)?.launches.len() as u64,
        bytes: 4 * n_params,
    };
    *by.entry(("optimizer", "adamw")).or_default() += Traffic {
        launches: plan_adamw(&with_decay, &step)?.launches.len() as u64,
        bytes: 7 * 4 * n_params + copy_bytes,
    };

    let total = by.values().fold(Traffic::default(), |mut a, &t| {
        a += t;
        a
    });
    if std::env::args().any(|a| a == "--json") {
        let rows: Vec<_> = by
            .iter()
            .map(|((p, f), t)| serde_json::json!({"phase": p, "family": f, "launches": t.launches, "bytes": t.bytes}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"model": preset, "batch": batch, "seq": seq, "precision": precision.to_string(),
                "rows": rows, "launches": total.launches, "bytes": total.bytes})
        );
        return Ok(());
    }
    println!(
        "{preset}, {precision}, {batch} × {seq}, one step on cuda (computed from launch plans and kernel code):"
    );
    println!("| phase | family | launches | GB read + written |");
    println!("|---|---|---:|---:|");
    for ((p, f), t) in &by {
        println!(
            "| {p} | {f} | {} | {:.2} |",
            t.launches,
            t.bytes as f64 / 1e9
        );
    }
    println!(
        "| all | | **{}** | **{:.2}** |",
        total.launches,
        total.bytes as f64 / 1e9
    );
    Ok(())
}
