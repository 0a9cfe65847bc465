//! The trainer end to end on small shapes: it learns, it is deterministic, and a
//! step leaks no memory.

use headroom::data::{Dataset, Split};
use headroom::memory::caching::round_size;
use headroom::nn::Model;
use headroom::rng::Rng;
use headroom::{AdamW, Device, Gpt, TrainConfig, Trainer};

mod common;
use common::small;

fn run(steps: u64, seed: u64) -> (Vec<f32>, Vec<(String, headroom::HostTensor)>) {
    let data = Dataset::bundled();
    let cfg = TrainConfig {
        batch: 4,
        seq_len: 32,
        steps,
        seed,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(
        Device::cpu(),
        Gpt::new(small()).unwrap(),
        AdamW::new(3e-3),
        cfg,
    )
    .unwrap();
    let mut rng = Rng::fork(seed, "train-data");
    let mut losses = Vec::new();
    for _ in 0..steps {
        let b = data.batch(Split::Train, &mut rng, 4, 32).unwrap();
        losses.push(t.step(&b).unwrap().loss);
    }
    (losses, t.parameters().unwrap())
}

#[test]
fn same_seed_gives_bit_identical_losses_and_weights() {
    let (l1, p1) = run(6, 7);
    let (l2, p2) = run(6, 7);
    let bits = |l: &[f32]| l.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&l1), bits(&l2));
    assert_eq!(p1, p2);
    let (l3, _) = run(6, 8);
    assert_ne!(
        bits(&l1),
        bits(&l3),
        "a different seed should change the run"
    );
}

#[test]
fn loss_falls() {
    let (l, _) = run(40, 1);
    let first: f32 = l[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = l[35..].iter().sum::<f32>() / 5.0;
    assert!(
        (l[0] - (256f32).ln()).abs() < 0.3,
        "initial loss {} should be near ln 256",
        l[0]
    );
    assert!(
        last < first - 1.0,
        "loss should fall: first {first}, last {last}"
    );
}

#[test]
fn steps_leak_no_memory() {
    let data = Dataset::bundled();
    let cfg = TrainConfig {
        batch: 2,
        seq_len: 16,
        steps: 10,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(
        Device::cpu(),
        Gpt::new(small()).unwrap(),
        AdamW::new(1e-3),
        cfg,
    )
    .unwrap();
    let resident = t.memory_stats().allocated_bytes;
    // Parameters plus two AdamW moments, all f32, each in a 512-byte-rounded block.
    let params: u64 = t
        .model()
        .param_specs()
        .iter()
        .map(|p| round_size(4 * p.shape.numel() as u64))
        .sum();
    assert_eq!(resident, 3 * params);
    let mut rng = Rng::new(3);
    for _ in 0..3 {
        let b = data.batch(Split::Train, &mut rng, 2, 16).unwrap();
        let r = t.step(&b).unwrap();
        assert!(r.memory.peak_allocated_bytes > resident);
        assert_eq!(t.memory_stats().allocated_bytes, resident);
    }
    t.eval_loss(&data).unwrap();
    assert_eq!(t.memory_stats().allocated_bytes, resident);
}

#[test]
fn generation_is_reproducible_and_in_vocab() {
    let cfg = TrainConfig {
        batch: 1,
        seq_len: 8,
        steps: 1,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(
        Device::cpu(),
        Gpt::new(small()).unwrap(),
        AdamW::new(1e-3),
        cfg,
    )
    .unwrap();
    let a = t
        .generate(
            b"To be".map(|b| b as i32).as_slice(),
            40,
            1.0,
            &mut Rng::new(5),
        )
        .unwrap();
    let b = t
        .generate(
            b"To be".map(|b| b as i32).as_slice(),
            40,
            1.0,
            &mut Rng::new(5),
        )
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 40);
    assert!(a.iter().all(|&x| (0..256).contains(&x)));
}
