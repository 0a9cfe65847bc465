//! The Llama family end to end on small shapes: it learns, recompute and
//! micro-batching change no bit, bf16 autocast trains it, and the presets
//! have the real models' sizes.

mod common;

use headroom::nn::{Llama, LlamaConfig, Model, ModelConfig};
use headroom::schedule::{Choice, Recompute};
use headroom::{AdamW, Device, Precision, TrainConfig, Trainer};

fn small() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 256,
        block_size: 16,
        n_layer: 2,
        n_head: 4,
        n_kv_head: 2,
        n_embd: 32,
        intermediate: 48,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
    }
}

fn run(choice: Choice, precision: Precision, steps: usize) -> (Vec<f32>, Vec<Vec<u8>>) {
    let cfg = TrainConfig {
        batch: 4,
        seq_len: 16,
        steps: steps as u64,
        precision,
        ..TrainConfig::default()
    };
    let model = Llama::new(small()).unwrap();
    let mut t = Trainer::with_plan(Device::cpu(), model, AdamW::new(1e-2), cfg, choice).unwrap();
    let losses = common::batches(4, steps, 4, 16)
        .iter()
        .map(|b| t.step(b).unwrap().loss)
        .collect();
    let w = t
        .parameters()
        .unwrap()
        .into_iter()
        .map(|p| p.1.data)
        .collect();
    (losses, w)
}

fn choice(micro_batch: usize, recompute: Recompute) -> Choice {
    Choice {
        micro_batch,
        recompute,
        levers: Default::default(),
    }
}

#[test]
fn llama_learns_and_recompute_changes_no_bit() {
    let (l, w) = run(choice(4, Recompute::None), Precision::F32, 30);
    assert!((l[0] - 256f32.ln()).abs() < 0.3, "initial loss {}", l[0]);
    assert!(l[29] < l[0] - 1.0, "{l:?}");
    for r in [Recompute::Cheap, Recompute::Every(1)] {
        let (l2, w2) = run(choice(4, r), Precision::F32, 30);
        assert_eq!(l, l2, "{r}");
        assert_eq!(w, w2, "{r}");
    }
    // Two micro-batches sum the same gradients in another order: close, not
    // bit-equal.
    let (l2, _) = run(choice(2, Recompute::None), Precision::F32, 30);
    assert!((l[29] - l2[29]).abs() < 1e-3, "{} vs {}", l[29], l2[29]);
}

#[test]
fn llama_trains_under_bf16_autocast() {
    let (l, _) = run(choice(4, Recompute::None), Precision::Bf16, 30);
    let (f, _) = run(choice(4, Recompute::None), Precision::F32, 30);
    assert!(l[29] < l[0] - 1.0, "{l:?}");
    assert!(
        (l[29] - f[29]).abs() < 0.1,
        "bf16 {} vs f32 {}",
        l[29],
        f[29]
    );
}

#[test]
fn presets_have_the_real_models_sizes() {
    let count = |name: &str| {
        ModelConfig::preset(name)
            .unwrap()
            .build()
            .unwrap()
            .num_params()
    };
    // As Hugging Face reports them for HuggingFaceTB/SmolLM-135M and
    // TinyLlama/TinyLlama-1.1B.
    assert_eq!(count("smollm-135m"), 134_515_008);
    assert_eq!(count("tinyllama-1.1b"), 1_100_048_384);
    let tiny = ModelConfig::preset("llama-tiny").unwrap().build().unwrap();
    assert_eq!(tiny.vocab_size(), 256);
    let e = ModelConfig::preset("llama-9b").unwrap_err();
    assert!(e.to_string().contains("tinyllama-1.1b"), "{e}");
}

#[test]
fn a_llama_plan_predicts_the_measured_peak() {
    let cfg = TrainConfig {
        batch: 4,
        seq_len: 16,
        steps: 2,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(
        Device::cpu(),
        Llama::new(small()).unwrap(),
        AdamW::new(1e-2),
        cfg,
    )
    .unwrap();
    let predicted = t.plan().unwrap().predicted_peak_bytes;
    for b in common::batches(5, 2, 4, 16) {
        t.step(&b).unwrap();
    }
    assert_eq!(t.memory_stats().peak_reserved_bytes, predicted);
}
