//! The same work on every backend here (cpu, wgpu, cuda where each exists):
//! per-op (matmul 256³, causal attention, LayerNorm) and one training step of
//! the tiny GPT, timed in one run and printed as a table of ratios to cpu.
//!
//! cargo bench --bench backends

use std::collections::HashMap;
use std::time::Instant;

use headroom::data::Dataset;
use headroom::graph::{Graph, Value};
use headroom::rng::Rng;
use headroom::schedule::{execute, lower, Mode};
use headroom::{AdamW, DType, Device, Gpt, GptConfig, HostTensor, Shape, TrainConfig, Trainer};

type Build = fn(&mut Graph, &[Value]) -> headroom::Result<Value>;
type Opener = Box<dyn Fn() -> Option<Device>>;

/// Median milliseconds of running `build` (forward only) with random inputs of
/// `shapes`, the result read back each time (so queued GPU work is included).
fn time_op(dev: &mut Device, shapes: &[&[usize]], build: Build, reps: usize) -> f64 {
    let mut g = Graph::new();
    let mut rng = Rng::new(1);
    let mut ts = Vec::new();
    let mut vals = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let v = g
            .input(&format!("x{i}"), Shape::new(s), DType::F32)
            .unwrap();
        let x: Vec<f64> = (0..Shape::new(s).numel()).map(|_| rng.normal()).collect();
        ts.push((
            v,
            dev.upload(&HostTensor::from_f64_as(Shape::new(s), &x, DType::F32).unwrap())
                .unwrap(),
        ));
        vals.push(v);
    }
    let out = build(&mut g, &vals).unwrap();
    let prog = lower(&g, &[out]).unwrap();
    let bind: HashMap<Value, _> = ts.iter().map(|(v, t)| (*v, t.view())).collect();
    let mut times = Vec::new();
    for i in 0..reps + 1 {
        let t0 = Instant::now();
        let r = execute(dev, &g, &prog, &bind, Mode::Eval).unwrap();
        dev.download(r[0].view()).unwrap();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        for t in r {
            dev.free(t);
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn time_step(dev: Device, reps: usize) -> f64 {
    let cfg = TrainConfig {
        batch: 8,
        seq_len: 64,
        ..TrainConfig::default()
    };
    let data = Dataset::bundled();
    let mut t = Trainer::new(
        dev,
        Gpt::new(GptConfig::tiny()).unwrap(),
        AdamW::new(1e-3),
        cfg,
    )
    .unwrap();
    let mut times = Vec::new();
    for i in 0..reps + 1 {
        let b = t.next_batch(&data).unwrap();
        let t0 = Instant::now();
        t.step(&b).unwrap();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let cases: Vec<(&str, Vec<&[usize]>, Build)> = vec![
        ("matmul 256³", vec![&[256, 256], &[256, 256]], |g, v| {
            g.matmul(v[0], v[1])
        }),
        ("attention B4 T128 C128 H4", vec![&[4, 128, 384]], |g, v| {
            g.attention(v[0], 4)
        }),
        (
            "layernorm 4096×256",
            vec![&[4096, 256], &[256], &[256]],
            |g, v| g.layernorm(v[0], v[1], v[2], 1e-5),
        ),
    ];
    let mut devices: Vec<(&str, Opener)> = vec![("cpu", Box::new(|| Some(Device::cpu())))];
    devices.push(("wgpu", Box::new(|| Device::wgpu().ok())));
    devices.push(("cuda", Box::new(|| Device::cuda().ok())));
    let mut table: Vec<(String, Vec<Option<f64>>)> =
        cases.iter().map(|c| (c.0.to_string(), vec![])).collect();
    table.push(("training step, tiny GPT, batch 8 × 64".into(), vec![]));
    let mut names = Vec::new();
    for (name, make) in &devices {
        let Some(mut dev) = make() else {
            eprintln!("{name}: not available here, skipped");
            continue;
        };
        names.push(*name);
        for (i, (_, shapes, build)) in cases.iter().enumerate() {
            table[i].1.push(Some(time_op(&mut dev, shapes, *build, 5)));
        }
        let n = table.len();
        table[n - 1].1.push(make().map(|d| time_step(d, 3)));
    }
    println!(
        "| work | {} | ratio to cpu |",
        names
            .iter()
            .map(|n| format!("{n} ms"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}---|", "---|".repeat(names.len()));
    for (work, ms) in &table {
        let cells: Vec<String> = ms
            .iter()
            .map(|m| m.map_or("-".into(), |x| format!("{x:.1}")))
            .collect();
        let ratios: Vec<String> = ms
            .iter()
            .skip(1)
            .map(|m| match (m, ms[0]) {
                (Some(x), Some(c)) => format!("{:.2}×", c / x),
                _ => "-".into(),
            })
            .collect();
        println!("| {work} | {} | {} |", cells.join(" | "), ratios.join(", "));
    }
    println!("(ratio = cpu time / backend time: above 1 the backend is faster)");
}
