//! Models that are not the built-in GPT, through the whole trainer: float
//! inputs and a loss of the model's own (planned, micro-batched, recovered,
//! checkpointed like a GPT), inference planned under the budget, and greedy
//! decoding.

mod common;

use headroom::data::Batch;
use headroom::graph::{Graph, Value};
use headroom::memory::Budget;
use headroom::nn::{Init, InputSpec, Model, Objective, ParamSpec};
use headroom::rng::Rng;
use headroom::schedule::{Choice, Recompute};
use headroom::{
    AdamW, DType, Device, Error, Gpt, HostTensor, Precision, Result, TrainConfig, Trainer,
};

const D: usize = 8;
const H: usize = 128;

/// `x [B, 8]` → a two-layer perceptron of width 128 → `[B, 1]`, MSE against `y [B, 1]`.
struct Mlp;

impl Mlp {
    fn predict(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let p: Vec<Value> = self
            .param_specs()
            .iter()
            .map(|s| s.record(g))
            .collect::<Result<_>>()?;
        g.set_block(Some(0));
        let h = g.matmul(x, p[0])?; // [B, H]
        let h = g.add(h, p[1])?;
        let h = g.gelu(h)?;
        g.set_block(None);
        let y = g.matmul(h, p[2])?; // [B, 1]
        match g.dtype(y) {
            DType::F32 => Ok(y),
            _ => g.cast(y, DType::F32),
        }
    }
}

impl Model for Mlp {
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("w1", [D, H], Init::Normal { std: 0.3 }),
            ParamSpec::new("b1", [H], Init::Zeros),
            ParamSpec::new("w2", [H, 1], Init::Normal { std: 0.1 }),
        ]
    }
    fn inputs(&self, _seq: usize) -> Vec<InputSpec> {
        vec![
            InputSpec::new("x", DType::F32, &[D]),
            InputSpec::target("y", DType::F32, &[1]),
        ]
    }
    fn objective(&self, g: &mut Graph, ins: &[Value]) -> Result<Objective> {
        let pred = self.predict(g, ins[0])?;
        let neg = g.scale(ins[1], -1.0)?;
        let e = g.add(pred, neg)?;
        let sq = g.mul(e, e)?;
        Ok(Objective::Loss(g.mean(sq, &[0, 1])?))
    }
    fn outputs(&self, g: &mut Graph, ins: &[Value]) -> Result<Vec<(String, Value)>> {
        Ok(vec![("y".into(), self.predict(g, ins[0])?)])
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::json!("mlp")
    }
}

fn batch(step: u64, b: usize) -> Batch {
    let mut rng = Rng::new(step);
    let x: Vec<f32> = (0..b * D).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = x.chunks(D).map(|r| (r[0] - 0.5 * r[1]).tanh()).collect();
    Batch::new(
        b,
        1,
        vec![
            ("x".into(), HostTensor::from_f32([b, D], &x).unwrap()),
            ("y".into(), HostTensor::from_f32([b, 1], &y).unwrap()),
        ],
    )
}

fn cfg(batch: usize, precision: Precision) -> TrainConfig {
    TrainConfig {
        batch,
        seq_len: 1,
        steps: 12,
        precision,
        ..TrainConfig::default()
    }
}

fn weights<M: Model>(t: &mut Trainer<M>) -> Vec<Vec<u8>> {
    t.parameters()
        .unwrap()
        .into_iter()
        .map(|p| p.1.data)
        .collect()
}

#[test]
fn a_regression_model_trains_planned_and_resumes_bit_identically() {
    let c = cfg(4096, Precision::Bf16);
    let mut forced = Trainer::with_plan(
        Device::cpu(),
        Mlp,
        AdamW::new(1e-2),
        c.clone(),
        Choice {
            micro_batch: 1024,
            recompute: Recompute::Every(1),
            levers: Default::default(),
        },
    )
    .unwrap();
    let mut first = None;
    let mut last = 0.0;
    for s in 0..12 {
        let r = forced.step(&batch(s, 4096)).unwrap();
        first.get_or_insert(r.loss);
        last = r.loss;
        assert_eq!(r.micro_batch, 1024);
    }
    assert!(last < first.unwrap() * 0.7, "mse {first:?} → {last}");

    // Under a budget the whole batch does not fit in: the planner cuts it,
    // and the peak it predicted is the peak the run reaches.
    let top = headroom::schedule::plan(&Mlp, AdamW::new(1e-2), &c, u64::MAX / 4, &[]).unwrap();
    let tight = Budget::Bytes(top.predicted_peak_bytes - 1);
    let mut dev = Device::cpu();
    dev.set_budget(Some(tight));
    let mut t = Trainer::new(dev, Mlp, AdamW::new(1e-2), c.clone()).unwrap();
    let plan = t.plan().unwrap().clone();
    assert!(
        plan.micro_batch < 4096 || plan.recompute != Recompute::None,
        "{plan}"
    );
    let dir = std::env::temp_dir().join(format!("headroom-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for s in 0..12 {
        if s == 6 {
            t.save_checkpoint(dir.join("half")).unwrap();
        }
        t.step(&batch(s, 4096)).unwrap();
    }
    assert_eq!(
        t.memory_stats().peak_reserved_bytes,
        plan.predicted_peak_bytes
    );
    let mut dev = Device::cpu();
    dev.set_budget(Some(tight));
    let mut r = Trainer::new(dev, Mlp, AdamW::new(1e-2), c).unwrap();
    assert_eq!(r.resume(dir.join("half")).unwrap(), 6);
    for s in 6..12 {
        r.step(&batch(s, 4096)).unwrap();
    }
    assert_eq!(weights(&mut t), weights(&mut r));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inference_is_planned_in_micro_batches_and_matches_the_whole_batch() {
    let c = cfg(8, Precision::F32);
    let mut whole = Trainer::new(Device::cpu(), Mlp, AdamW::new(1e-2), c.clone()).unwrap();
    let probe = batch(99, 256);
    let x = Batch::new(256, 1, vec![probe.inputs()[0].clone()]);
    let all = whole.infer(&x).unwrap();
    assert_eq!(all[0].0, "y");
    assert_eq!(all[0].1.shape.dims(), &[256, 1]);

    // A budget that holds the state but not 256 examples' activations at once.
    let mut dev = Device::cpu();
    dev.set_budget(Some(Budget::Bytes(2 << 20)));
    let mut small = Trainer::new(dev, Mlp, AdamW::new(1e-2), c).unwrap();
    let big = Batch::new(
        4096,
        1,
        vec![(
            "x".into(),
            HostTensor::from_f32([4096, D], &vec![0.5; 4096 * D]).unwrap(),
        )],
    );
    let out = small.infer(&big).unwrap();
    assert_eq!(out[0].1.shape.dims(), &[4096, 1]);
    assert!(small.memory_stats().peak_reserved_bytes <= 2 << 20);
    // The same weights (same seed): the same predictions, micro-batched or not.
    let parts = small.infer(&x).unwrap();
    let (a, b) = (all[0].1.to_f32_vec(), parts[0].1.to_f32_vec());
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-6 * p.abs().max(1.0), "{p} vs {q}");
    }
}

#[test]
fn a_batch_without_a_declared_input_is_a_typed_error() {
    let mut t = Trainer::new(Device::cpu(), Mlp, AdamW::new(1e-2), cfg(4, Precision::F32)).unwrap();
    let b = batch(0, 4);
    let only_x = Batch::new(4, 1, vec![b.inputs()[0].clone()]);
    let e = t.step(&only_x).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "batch", .. }), "{e}");
    assert!(e.to_string().contains("`y`"), "{e}");
    let wrong = Batch::new(
        4,
        1,
        vec![
            b.inputs()[0].clone(),
            ("y".into(), HostTensor::from_f32([4, 2], &[0.0; 8]).unwrap()),
        ],
    );
    let e = t.step(&wrong).unwrap_err();
    assert!(e.to_string().contains("input `y`"), "{e}");
}

/// A GPT whose objective is the unfused cross-entropy, recorded as a
/// general loss: the general path must train as the fused one does.
struct UnfusedGpt(Gpt);

impl Model for UnfusedGpt {
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.0.param_specs()
    }
    fn objective(&self, g: &mut Graph, ins: &[Value]) -> Result<Objective> {
        let logits = self.0.forward(g, ins[0])?;
        let loss = g.cross_entropy_classes(logits, ins[1], self.0.vocab_size())?;
        Ok(Objective::Loss(loss))
    }
    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value> {
        self.0.forward(g, tokens)
    }
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
    fn block_size(&self) -> usize {
        self.0.block_size()
    }
}

#[test]
fn a_general_loss_trains_as_the_fused_language_model_loss_does() {
    let c = TrainConfig {
        batch: 4,
        seq_len: 16,
        steps: 5,
        ..TrainConfig::default()
    };
    let choice = Choice {
        micro_batch: 2,
        recompute: Recompute::None,
        levers: Default::default(),
    };
    let model = || Gpt::new(common::gpt(2, 16, 32)).unwrap();
    let mut fused =
        Trainer::with_plan(Device::cpu(), model(), AdamW::new(1e-2), c.clone(), choice).unwrap();
    let mut general = Trainer::with_plan(
        Device::cpu(),
        UnfusedGpt(model()),
        AdamW::new(1e-2),
        c,
        choice,
    )
    .unwrap();
    for b in common::batches(3, 5, 4, 16) {
        let (x, y) = (fused.step(&b).unwrap(), general.step(&b).unwrap());
        assert!((x.loss - y.loss).abs() < 1e-5, "{} vs {}", x.loss, y.loss);
        assert!(
            (x.grad_norm - y.grad_norm).abs() < 1e-5 * x.grad_norm,
            "{x:?} {y:?}"
        );
    }
}

#[test]
fn greedy_decoding_takes_the_most_likely_token() {
    let c = TrainConfig {
        batch: 2,
        seq_len: 16,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(
        Device::cpu(),
        Gpt::new(common::gpt(1, 16, 32)).unwrap(),
        AdamW::new(1e-2),
        c,
    )
    .unwrap();
    for b in common::batches(1, 3, 2, 16) {
        t.step(&b).unwrap();
    }
    let prompt = [b'T' as i32, b'h' as i32];
    let a = t.generate(&prompt, 6, 0.0, &mut Rng::new(1)).unwrap();
    let b = t.generate(&prompt, 6, 0.0, &mut Rng::new(2)).unwrap();
    assert_eq!(a, b, "greedy decoding draws nothing");
    // The first token is the argmax of the inference graph's last row.
    let mut ids = prompt.to_vec();
    ids.resize(16, 0);
    let x = Batch::new(
        1,
        16,
        vec![(
            "tokens".into(),
            HostTensor::from_i32([1, 16], &ids).unwrap(),
        )],
    );
    let logits = t.infer(&x).unwrap().remove(0).1;
    assert_eq!(logits.shape.dims(), &[1, 16, 256]);
    let row = &logits.to_f32_vec()[256..512];
    let best = (0..256).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap();
    assert_eq!(a[0], best as i32);
    let e = t.generate(&prompt, 1, -1.0, &mut Rng::new(1)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}
