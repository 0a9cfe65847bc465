//! Mixed precision on cpu: the loss scaler's skip/backoff/growth, autocast's
//! casts, and the planner seeing the smaller activations.

use headroom::data::Batch;
use headroom::graph::{autodiff, Graph, Op, ValueKind};
use headroom::memory::caching::MIN_BLOCK;
use headroom::nn::Model;
use headroom::scaler::LossScaler;
use headroom::schedule::plan;
use headroom::schedule::step::StepCompiler;
use headroom::{AdamW, DType, Device, Gpt, GptConfig, Precision, TrainConfig, Trainer};

mod common;
use common::small;

fn cfg(precision: Precision) -> TrainConfig {
    TrainConfig {
        batch: 4,
        seq_len: 32,
        steps: 20,
        precision,
        ..TrainConfig::default()
    }
}

fn batches(n: usize) -> Vec<Batch> {
    common::batches(3, n, 4, 32)
}

fn trainer(p: Precision) -> Trainer<Gpt> {
    Trainer::new(
        Device::cpu(),
        Gpt::new(small()).unwrap(),
        AdamW::new(3e-3),
        cfg(p),
    )
    .unwrap()
}

#[test]
fn an_overflow_skips_exactly_that_step_and_backs_off_after_the_hysteresis() {
    let data = batches(5);
    let mut t = trainer(Precision::F16);
    assert_eq!(t.scaler().unwrap().scale, 65536.0);
    let r = t.step(&data[0]).unwrap();
    assert!(!r.skipped && r.loss.is_finite());
    let (params, state) = (t.parameters().unwrap(), t.optimizer_state().unwrap());

    t.inject_overflow_next_step();
    let r = t.step(&data[1]).unwrap();
    assert!(r.skipped, "the overflowing step is skipped");
    assert!(t.parameters().unwrap() == params, "weights untouched");
    assert!(
        t.optimizer_state().unwrap() == state,
        "optimizer state untouched"
    );
    assert_eq!(
        t.scaler().unwrap().scale,
        65536.0,
        "one overflow: no backoff yet (hysteresis 2)"
    );

    t.inject_overflow_next_step();
    let r = t.step(&data[2]).unwrap();
    assert!(r.skipped);
    assert!(t.parameters().unwrap() == params);
    assert_eq!(
        t.scaler().unwrap().scale,
        32768.0,
        "second overflow in a row halves the scale"
    );

    let r = t.step(&data[3]).unwrap();
    assert!(!r.skipped && r.loss_scale == 32768.0);
    assert!(
        t.parameters().unwrap() != params,
        "a clean step updates again"
    );
    assert_eq!(t.skipped_steps(), 2);
}

#[test]
fn clean_steps_grow_the_scale() {
    let data = batches(4);
    let mut t = trainer(Precision::F16);
    t.set_scaler(LossScaler {
        growth_interval: 3,
        ..LossScaler::default()
    });
    for b in &data[..3] {
        assert!(!t.step(b).unwrap().skipped);
    }
    assert_eq!(t.scaler().unwrap().scale, 131072.0);
}

#[test]
fn f16_with_the_scaler_tracks_f32() {
    let data = batches(6);
    let mut a = trainer(Precision::F32);
    let mut b = trainer(Precision::F16);
    let mut c = trainer(Precision::Bf16);
    assert!(c.scaler().is_none(), "bf16 needs no loss scaler");
    for d in &data {
        let (la, lb, lc) = (
            a.step(d).unwrap().loss,
            b.step(d).unwrap().loss,
            c.step(d).unwrap().loss,
        );
        assert!((la - lb).abs() < 0.02 * la, "f16 {lb} vs f32 {la}");
        assert!((la - lc).abs() < 0.05 * la, "bf16 {lc} vs f32 {la}");
    }
}

#[test]
fn autocast_records_one_low_precision_copy_per_weight() {
    let model = Gpt::new(small()).unwrap();
    let mut g = Graph::new();
    g.set_autocast(Some(DType::BF16));
    let tokens = g.input("tokens", [2, 8], DType::I32).unwrap();
    let logits = model.forward(&mut g, tokens).unwrap();
    let mut casts_of = std::collections::HashMap::new();
    for n in g.nodes() {
        if let Op::Cast { to } = n.op {
            // Activations may go up to f32 (the residual stream); weights only down.
            if let ValueKind::Param(name) = &g.info(n.inputs[0]).kind {
                assert_eq!(to, DType::BF16);
                *casts_of.entry(name.clone()).or_insert(0) += 1;
            }
        }
        if let Op::MatMul { .. } | Op::Attention { .. } = n.op {
            for &v in &n.inputs {
                assert_eq!(
                    g.dtype(v),
                    DType::BF16,
                    "{} takes bf16 operands",
                    n.op.name()
                );
            }
        }
        if let Op::LayerNorm { .. } = n.op {
            for &v in &n.inputs {
                assert_eq!(g.dtype(v), DType::F32, "layernorm computes from f32");
            }
            assert_eq!(g.dtype(n.outputs[0]), DType::BF16, "and writes bf16");
            assert_eq!(g.dtype(n.outputs[1]), DType::F32, "its statistics stay f32");
        }
    }
    // The forward casts weights only: no LayerNorm output, no projection
    // joining the residual stream goes through a Cast node.
    let activation_casts: Vec<_> = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Cast { .. }))
        .filter(|n| !matches!(g.info(n.inputs[0]).kind, ValueKind::Param(_)))
        .map(|n| g.producer(n.inputs[0]).map(|p| g.node(p).op.name()))
        .collect();
    assert!(activation_casts.is_empty(), "{activation_casts:?}");
    // The residual adds take the bf16 projections as they are and give f32.
    let mixed_adds = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Add))
        .filter(|n| g.dtype(n.inputs[0]) == DType::F32 && g.dtype(n.inputs[1]) == DType::BF16)
        .inspect(|n| assert_eq!(g.dtype(n.outputs[0]), DType::F32))
        .count();
    assert_eq!(mixed_adds, 2 * small().n_layer, "two residual adds a block");
    // wte feeds the embedding (f32) and the tied output matmul (one bf16 copy).
    assert_eq!(casts_of.get("wte.weight"), Some(&1));
    assert!(casts_of.values().all(|&n| n == 1), "{casts_of:?}");
    assert_eq!(g.dtype(logits), DType::BF16);
}

#[test]
fn the_backward_casts_only_the_mixed_adds_gradients() {
    let model = Gpt::new(small()).unwrap();
    let mut g = Graph::new();
    g.set_autocast(Some(DType::BF16));
    let tokens = g.input("tokens", [2, 8], DType::I32).unwrap();
    let targets = g.input("targets", [2, 8], DType::I32).unwrap();
    let logits = model.forward(&mut g, tokens).unwrap();
    let loss = g.cross_entropy(logits, targets).unwrap();
    g.set_autocast(None);
    let params = g.params().to_vec();
    let forward = g.nodes().len();
    let grads = autodiff::backward(&mut g, loss, &params).unwrap();
    for (&p, &d) in params.iter().zip(&grads) {
        assert_eq!(g.dtype(p), g.dtype(d), "a gradient has its value's dtype");
    }
    let mut casts = 0;
    for n in &g.nodes()[forward..] {
        match n.op {
            // LayerNorm's backward takes the bf16 gradient of its bf16 output
            // and gives f32 gradients of its f32 operands.
            Op::LayerNormBackward => {
                assert_eq!(g.dtype(n.inputs[0]), DType::BF16);
                assert!(n.outputs.iter().all(|&o| g.dtype(o) == DType::F32));
            }
            // The only casts left: the f32 stream's gradient rounded for the
            // bf16 projection of each residual add, and the weights' bf16
            // gradients widened for their f32 masters.
            Op::Cast { to } => {
                casts += 1;
                let from = g.dtype(n.inputs[0]);
                assert!(
                    (from, to) == (DType::F32, DType::BF16)
                        || (from, to) == (DType::BF16, DType::F32),
                    "{from} -> {to}"
                );
            }
            _ => {}
        }
    }
    let down = g.nodes()[forward..]
        .iter()
        .filter(|n| matches!(n.op, Op::Cast { to: DType::BF16 }))
        .count();
    assert_eq!(down, 2 * small().n_layer, "one per residual add");
    assert!(casts > down);
}

#[test]
fn bf16_plans_need_less_memory() {
    let model = Gpt::new(GptConfig::tiny()).unwrap();
    let c = |p| TrainConfig {
        batch: 32,
        seq_len: 64,
        precision: p,
        ..TrainConfig::default()
    };
    let f32p = plan(&model, AdamW::new(1e-3), &c(Precision::F32), 1 << 34, &[]).unwrap();
    let bf16p = plan(&model, AdamW::new(1e-3), &c(Precision::Bf16), 1 << 34, &[]).unwrap();
    assert!(
        bf16p.breakdown.activations < f32p.breakdown.activations,
        "bf16 {} vs f32 {}",
        bf16p.breakdown.activations,
        f32p.breakdown.activations
    );
    // f32 master weights either way; in bf16 also the copy of each weight the
    // forward casts, which AdamW keeps current instead of a cast per step.
    let copies = StepCompiler::new(Precision::Bf16).low_copies(&model);
    assert!(!copies.is_empty());
    let copy_bytes: u64 = model
        .param_specs()
        .iter()
        .filter(|p| copies.get(&p.name) == Some(&DType::BF16))
        .map(|p| (2 * p.shape.numel() as u64).next_multiple_of(MIN_BLOCK))
        .sum();
    assert_eq!(bf16p.breakdown.weights, f32p.breakdown.weights + copy_bytes);
}

/// Weight copies hold 2 bytes per parameter for the run: under a budget that
/// fits the smallest plan only without them, the planner drops them (the
/// weights are cast every step again), and the trainer places none, so the
/// measured peak is still the predicted one.
#[test]
fn the_planner_drops_weight_copies_where_only_that_fits() {
    use headroom::memory::Budget;
    use headroom::schedule::{simulate, Choice, Recompute};
    // Wide enough that the copies outgrow the allocator's 2 MiB segments.
    let config = common::gpt(2, 16, 256);
    let model = Gpt::new(config.clone()).unwrap();
    let cfg = |copies| TrainConfig {
        batch: 4,
        seq_len: 16,
        precision: Precision::Bf16,
        weight_copies: copies,
        ..TrainConfig::default()
    };
    let opt = AdamW::new(1e-3);
    // The least any plan needs, with copies and without.
    let need = |copies| {
        let mut least = u64::MAX;
        for micro_batch in [1, 2, 4] {
            for recompute in Recompute::candidates(2) {
                let choice = Choice {
                    micro_batch,
                    recompute,
                    levers: Default::default(),
                };
                let s = simulate(&model, opt, &cfg(copies), choice, None).unwrap();
                least = least.min(s.peak_reserved);
            }
        }
        least
    };
    let (with, without) = (need(true), need(false));
    assert!(without < with, "copies cost memory: {without} vs {with}");
    let budget = (with + without) / 2;
    let p = plan(&model, opt, &cfg(true), budget, &[]).unwrap();
    assert!(!p.weight_copies, "{p}");
    assert!(p.predicted_peak_bytes <= budget);
    let roomy = plan(&model, opt, &cfg(true), 1 << 34, &[]).unwrap();
    assert!(roomy.weight_copies);

    let mut dev = Device::cpu();
    dev.set_budget(Some(Budget::Bytes(budget)));
    let mut t = Trainer::new(dev, Gpt::new(config).unwrap(), opt, cfg(true)).unwrap();
    let batch = common::batches(3, 1, 4, 16).remove(0);
    t.step(&batch).unwrap();
    t.step(&batch).unwrap();
    assert_eq!(
        t.memory_stats().peak_reserved_bytes,
        t.plan().unwrap().predicted_peak_bytes,
        "predicted = measured without copies"
    );
}
