//! Per-op profiles (`Device::start_profile`): on cpu the host clock times each
//! op, so a step's profile can be checked here against what the step ran.

mod common;

use headroom::{AdamW, Device, Gpt, Precision, TrainConfig, Trainer};

fn trainer_on(device: Device) -> Trainer<Gpt> {
    let cfg = TrainConfig {
        batch: 4,
        seq_len: 16,
        steps: 10,
        precision: Precision::F32,
        ..TrainConfig::default()
    };
    let model = Gpt::new(common::small()).unwrap();
    Trainer::new(device, model, AdamW::new(1e-3), cfg).unwrap()
}

#[test]
fn a_profile_counts_every_op_of_the_steps_it_covers() {
    let mut t = trainer_on(Device::cpu());
    let batches = common::batches(1, 3, 4, 16);
    t.step(&batches[0]).unwrap();
    assert!(
        t.device_mut().take_profile().unwrap().is_none(),
        "no profile was started"
    );
    let n_layer = common::small().n_layer as u64;
    let mut per_step = None;
    for steps in [1u64, 2] {
        t.device_mut().start_profile();
        for b in &batches[..steps as usize] {
            t.step(b).unwrap();
        }
        let p = t
            .device_mut()
            .take_profile()
            .unwrap()
            .expect("cpu keeps a timer");
        let calls = |phase: &str, op: &str| -> u64 {
            p.rows
                .iter()
                .filter(|r| r.phase == phase && r.op == op)
                .map(|r| r.calls)
                .sum()
        };
        // One attention and one AdamW per block / per step, whatever else ran.
        assert_eq!(calls("forward", "attention"), n_layer * steps);
        assert_eq!(calls("backward", "attention_backward"), n_layer * steps);
        assert_eq!(calls("optimizer", "adamw"), steps);
        assert_eq!(calls("optimizer", "sum_squares"), steps);
        assert!(p.busy_ms() > 0.0 && p.idle_ms >= 0.0);
        // Every family's time is in a phase/family row and adds up.
        let by_family: f64 = p.by_family().iter().map(|r| r.ms).sum();
        assert!((by_family - p.busy_ms()).abs() < 1e-9 * p.busy_ms().max(1.0));
        let total: u64 = p.rows.iter().map(|r| r.calls).sum();
        match per_step {
            None => per_step = Some(total),
            // Two steps run each op twice: `per` divides it back.
            Some(one) => {
                assert_eq!(total, 2 * one);
                let halved: u64 = p.per(2).rows.iter().map(|r| r.calls).sum();
                assert_eq!(halved, one);
            }
        }
    }
}

#[test]
fn a_backend_without_a_timer_gives_no_profile() {
    // The simulated device keeps no timer, as wgpu does not; its steps run
    // every op (on no data).
    let mut t = trainer_on(Device::simulated(1 << 30));
    t.device_mut().start_profile();
    t.step(&common::batches(1, 1, 4, 16)[0]).unwrap();
    assert!(t.device_mut().take_profile().unwrap().is_none());
}
