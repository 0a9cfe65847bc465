//! A model that is not a language model, trained through `Trainer`: float
//! features in, a float target, mean squared error built from graph ops, and
//! an activation of our own (0.1·x + 0.9·gelu(x)) that gets its gradient from
//! autodiff. Under a budget below what the whole batch needs, in bf16, the
//! trainer plans micro-batches, predicts the peak, checkpoints and resumes it
//! exactly as it does a GPT.
//!
//! cargo run --release --example regression [-- --smoke]

use headroom::data::Batch;
use headroom::graph::{Graph, Value};
use headroom::memory::{format_bytes, Budget};
use headroom::nn::{Init, InputSpec, Model, Objective, ParamSpec};
use headroom::rng::Rng;
use headroom::{AdamW, DType, Device, HostTensor, Precision, Result, TrainConfig, Trainer};

/// Features per example.
const D: usize = 16;

/// A three-layer perceptron: `x [B, D]` → `[B, 1]`.
struct Regressor {
    hidden: usize,
}

impl Regressor {
    fn layer(g: &mut Graph, x: Value, w: Value, b: Value) -> Result<Value> {
        let h = g.matmul(x, w)?; // [B, out]
        g.add(h, b)
    }

    /// Leaky GELU, our own activation: 0.1·x + 0.9·gelu(x).
    fn act(g: &mut Graph, x: Value) -> Result<Value> {
        let lin = g.scale(x, 0.1)?;
        let gel = g.gelu(x)?;
        let gel = g.scale(gel, 0.9)?;
        g.add(gel, lin)
    }

    fn predict(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let p: Vec<Value> = self
            .param_specs()
            .iter()
            .map(|s| s.record(g))
            .collect::<Result<_>>()?;
        g.set_block(Some(0)); // a block the planner may recompute instead of keep
        let h = Self::layer(g, x, p[0], p[1])?; // [B, H]
        let h = Self::act(g, h)?;
        g.set_block(Some(1));
        let h = Self::layer(g, h, p[2], p[3])?; // [B, H]
        let h = Self::act(g, h)?;
        g.set_block(None);
        let y = Self::layer(g, h, p[4], p[5])?; // [B, 1]
                                                // Under autocast the matmuls ran in bf16; the loss is taken in f32.
        match g.dtype(y) {
            DType::F32 | DType::F64 => Ok(y),
            _ => g.cast(y, DType::F32),
        }
    }
}

impl Model for Regressor {
    fn param_specs(&self) -> Vec<ParamSpec> {
        let h = self.hidden;
        let w = |n: &str, i: usize, o: usize| {
            let std = (1.0 / i as f64).sqrt();
            ParamSpec::new(n, [i, o], Init::Normal { std })
        };
        let b = |n: &str, o: usize| ParamSpec::new(n, [o], Init::Zeros);
        vec![
            w("fc1.weight", D, h),
            b("fc1.bias", h),
            w("fc2.weight", h, h),
            b("fc2.bias", h),
            w("out.weight", h, 1),
            b("out.bias", 1),
        ]
    }

    fn inputs(&self, _seq: usize) -> Vec<InputSpec> {
        vec![
            InputSpec::new("x", DType::F32, &[D]),
            InputSpec::target("y", DType::F32, &[1]),
        ]
    }

    fn objective(&self, g: &mut Graph, inputs: &[Value]) -> Result<Objective> {
        let pred = self.predict(g, inputs[0])?; // [B, 1]
        let neg = g.scale(inputs[1], -1.0)?;
        let err = g.add(pred, neg)?;
        let sq = g.mul(err, err)?;
        Ok(Objective::Loss(g.mean(sq, &[0, 1])?)) // mean over the micro-batch
    }

    fn outputs(&self, g: &mut Graph, inputs: &[Value]) -> Result<Vec<(String, Value)>> {
        Ok(vec![("y".into(), self.predict(g, inputs[0])?)])
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "regressor": { "features": D, "hidden": self.hidden } })
    }
}

/// The function to learn: smooth, nonlinear, in every feature.
fn target(x: &[f32]) -> f32 {
    let s: f32 = x
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + i as f32 / D as f32))
        .sum();
    (s / 4.0).sin() + 0.1 * x[0] * x[1]
}

/// Step `step`'s batch, a function of the step alone: a resumed run draws
/// the batches the uninterrupted one did.
fn batch_for(step: u64, b: usize) -> Result<Batch> {
    let mut rng = Rng::new(1_000 + step);
    let x: Vec<f32> = (0..b * D).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = x.chunks(D).map(target).collect();
    Ok(Batch::new(
        b,
        1,
        vec![
            ("x".into(), HostTensor::from_f32([b, D], &x)?),
            ("y".into(), HostTensor::from_f32([b, 1], &y)?),
        ],
    ))
}

fn trainer(budget: Option<u64>, cfg: &TrainConfig, hidden: usize) -> Result<Trainer<Regressor>> {
    let mut device = Device::cpu();
    device.set_budget(budget.map(Budget::Bytes));
    Trainer::new(device, Regressor { hidden }, AdamW::new(3e-3), cfg.clone())
}

fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (steps, batch, hidden) = if smoke {
        (6, 512, 64)
    } else {
        (200, 2048, 256)
    };
    let cfg = TrainConfig {
        batch,
        seq_len: 1,
        steps,
        precision: Precision::Bf16,
        ..TrainConfig::default()
    };
    // Half way between the smallest plan and the whole batch at once: the
    // planner must cut the batch or recompute.
    let top = headroom::schedule::plan(
        &Regressor { hidden },
        AdamW::new(3e-3),
        &cfg,
        u64::MAX / 4,
        &[],
    )?
    .predicted_peak_bytes;
    let small = TrainConfig {
        batch: 1,
        ..cfg.clone()
    };
    let bottom = headroom::schedule::plan(
        &Regressor { hidden },
        AdamW::new(3e-3),
        &small,
        u64::MAX / 4,
        &[],
    )?
    .predicted_peak_bytes;
    let budget = (top + bottom) / 2;
    let mut t = trainer(Some(budget), &cfg, hidden)?;
    print!("{}", t.plan()?);
    let predicted = t.plan()?.predicted_peak_bytes;

    let half = steps / 2;
    let dir = std::env::temp_dir().join(format!("headroom-regression-{}", std::process::id()));
    let mut losses = Vec::new();
    for step in 0..steps {
        if step == half {
            t.save_checkpoint(dir.join("half"))?;
        }
        let r = t.step(&batch_for(step, batch)?)?;
        losses.push(r.loss);
        if r.step % 100 == 0 || r.step == 1 || r.step == steps {
            println!(
                "step {:>3}  mse {:.4}  micro-batch {}  {}",
                r.step, r.loss, r.micro_batch, r.precision
            );
        }
    }
    let measured = t.memory_stats().peak_reserved_bytes;
    println!(
        "budget {}  predicted peak {}  measured peak {}  ({})",
        format_bytes(budget),
        format_bytes(predicted),
        format_bytes(measured),
        if predicted == measured {
            "equal"
        } else {
            "DIFFERENT"
        }
    );

    // Inference: forward only, planned under the same budget.
    let probe = batch_for(u64::MAX, batch)?;
    let out = t.infer(&Batch::new(batch, 1, vec![probe.inputs()[0].clone()]))?;
    let pred = out[0].1.to_f32_vec();
    let want = probe.input("y").map(|y| y.to_f32_vec()).unwrap_or_default();
    let mse: f32 = pred
        .iter()
        .zip(&want)
        .map(|(p, w)| (p - w) * (p - w))
        .sum::<f32>()
        / batch as f32;
    println!(
        "held-out mse {mse:.4} (the mean of y² is {:.4})",
        want.iter().map(|w| w * w).sum::<f32>() / batch as f32
    );

    // Resume from the half-way checkpoint: the same weights, bit for bit.
    let mut r = trainer(Some(budget), &cfg, hidden)?;
    r.resume(dir.join("half"))?;
    for step in half..steps {
        r.step(&batch_for(step, batch)?)?;
    }
    let (a, b) = (t.parameters()?, r.parameters()?);
    let same = a.iter().zip(&b).all(|(x, y)| x.1.data == y.1.data);
    println!(
        "resumed at step {half}: weights {}",
        if same { "bit-identical" } else { "DIFFER" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    if predicted != measured || !same {
        return Err(headroom::Error::Internal(
            "the regression example's checks failed".into(),
        ));
    }
    Ok(())
}
