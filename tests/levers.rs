//! The levers past the model-state floor on the cpu backend: every lever set's
//! predicted peaks equal the measured ones in both pools (device and host);
//! offload and gradient release train bit-identically to the plain step;
//! 8-bit state checkpoints and resumes exactly; and recovery escalates to
//! offload when memory shrinks below the state's size mid-run.

mod common;

use headroom::memory::Budget;
use headroom::schedule::levers::{Levers, OptimizerState};
use headroom::schedule::{plan, simulate, update, Choice, Recompute};
use headroom::{AdamW, Device, Gpt, HostTensor, TrainConfig, Trainer};

/// Streamed moments pass through the window in several chunks even at these
/// sizes (wte is 256 × 64 = 16384 elements: four chunks of 4096).
fn small_window() {
    update::set_window_elems(4096);
}

fn model() -> Gpt {
    Gpt::new(common::gpt(2, 32, 64)).unwrap()
}

fn cfg(state: OptimizerState) -> TrainConfig {
    TrainConfig {
        batch: 4,
        seq_len: 32,
        steps: 20,
        optimizer_state: state,
        ..TrainConfig::default()
    }
}

/// No clipping: gradient release is legal.
fn opt() -> AdamW {
    AdamW {
        grad_clip: None,
        ..AdamW::new(3e-3)
    }
}

fn all_sets() -> Vec<Levers> {
    let mut v = vec![];
    for q8 in [false, true] {
        for host in [false, true] {
            for release in [false, true] {
                v.push(Levers {
                    offload_optimizer: host,
                    state_8bit: q8,
                    gradient_release: release,
                });
            }
        }
    }
    v
}

fn state_of(l: Levers) -> OptimizerState {
    match l.state_8bit {
        true => OptimizerState::Q8,
        false => OptimizerState::F32,
    }
}

#[test]
fn every_lever_set_predicts_both_pools_exactly() {
    small_window();
    let data = common::batches(7, 2, 4, 32);
    for levers in all_sets() {
        for (mb, pol) in [
            (4, Recompute::None),
            (4, Recompute::Every(1)),
            (2, Recompute::Cheap),
        ] {
            if levers.gradient_release && mb != 4 {
                continue;
            }
            let choice = Choice {
                micro_batch: mb,
                recompute: pol,
                levers,
            };
            let c = cfg(state_of(levers));
            let s = simulate(&model(), opt(), &c, choice, None).unwrap();
            let mut dev = Device::cpu();
            dev.set_budget(Some(Budget::Bytes(s.peak_reserved)));
            let mut t = Trainer::with_plan(dev, model(), opt(), c, choice).unwrap();
            t.step(&data[0]).unwrap();
            t.loss(&data[0]).unwrap();
            t.step(&data[1]).unwrap();
            let dev_peak = t.memory_stats().peak_reserved_bytes;
            let host_peak = t.device().host_stats().peak_reserved_bytes;
            println!(
                "{levers} mb {mb} {pol}: device {dev_peak} (predicted {}), host {host_peak} (predicted {})",
                s.peak_reserved, s.host_peak_reserved
            );
            assert_eq!(dev_peak, s.peak_reserved, "{levers} mb {mb} {pol}: device");
            assert_eq!(
                host_peak, s.host_peak_reserved,
                "{levers} mb {mb} {pol}: host"
            );
            assert_eq!(
                host_peak > 0,
                levers.offload_optimizer,
                "{levers}: host pool use"
            );
        }
    }
}

/// Losses of `steps` steps and the final weights under `levers`.
fn run(levers: Levers, steps: usize) -> (Vec<f32>, Vec<(String, HostTensor)>) {
    run_with(levers, Recompute::None, steps)
}

fn run_with(
    levers: Levers,
    recompute: Recompute,
    steps: usize,
) -> (Vec<f32>, Vec<(String, HostTensor)>) {
    let choice = Choice {
        micro_batch: 4,
        recompute,
        levers,
    };
    let mut t =
        Trainer::with_plan(Device::cpu(), model(), opt(), cfg(state_of(levers)), choice).unwrap();
    let data = common::batches(3, steps, 4, 32);
    let losses = data.iter().map(|b| t.step(b).unwrap().loss).collect();
    (losses, t.parameters().unwrap())
}

#[test]
fn offload_and_release_train_bit_identically() {
    small_window();
    for q8 in [false, true] {
        let plain = Levers {
            state_8bit: q8,
            ..Levers::default()
        };
        let reference = run(plain, 20);
        for (host, release) in [(true, false), (false, true), (true, true)] {
            let l = Levers {
                offload_optimizer: host,
                state_8bit: q8,
                gradient_release: release,
            };
            let got = run(l, 20);
            assert_eq!(got.0, reference.0, "{l}: losses");
            assert!(got.1 == reference.1, "{l}: weights differ after 20 steps");
        }
        println!(
            "8-bit {q8}: 20 steps, final loss {} bit-identical under every lever set",
            reference.0[19]
        );
    }
}

#[test]
fn activation_offload_trains_bit_identically() {
    let plain = run_with(Levers::default(), Recompute::None, 20);
    let off = run_with(Levers::default(), Recompute::Offload(1), 20);
    assert_eq!(off.0, plain.0, "losses");
    assert!(off.1 == plain.1, "weights differ after 20 steps");
    // Offload lowers the device peak of every-block recompute: the kept block
    // inputs wait in the host pool.
    // Activations dominate: 16 sequences of 256 tokens through 6 narrow blocks.
    let c = TrainConfig {
        batch: 16,
        seq_len: 256,
        ..cfg(OptimizerState::F32)
    };
    let long = Gpt::new(common::gpt(6, 256, 64)).unwrap();
    let peak = |pol| {
        let ch = Choice {
            micro_batch: 16,
            recompute: pol,
            levers: Levers::default(),
        };
        let s = simulate(&long, opt(), &c, ch, None).unwrap();
        (s.peak_allocated, s.host_peak_reserved)
    };
    let (every, offload) = (peak(Recompute::Every(1)), peak(Recompute::Offload(1)));
    println!("every-block {every:?}, offload-every-block {offload:?} (allocated, host)");
    assert!(offload.0 < every.0 && offload.1 > 0);
}

#[test]
fn eight_bit_state_resumes_exactly_from_a_checkpoint() {
    small_window();
    let dir = std::env::temp_dir().join(format!("headroom-levers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for host in [false, true] {
        let l = Levers {
            offload_optimizer: host,
            state_8bit: true,
            gradient_release: false,
        };
        let choice = Choice {
            micro_batch: 4,
            recompute: Recompute::None,
            levers: l,
        };
        let make = || {
            Trainer::with_plan(
                Device::cpu(),
                model(),
                opt(),
                cfg(OptimizerState::Q8),
                choice,
            )
            .unwrap()
        };
        let data = common::batches(5, 6, 4, 32);
        let mut a = make();
        for b in &data[..3] {
            a.step(b).unwrap();
        }
        let path = dir.join(format!("ck-{host}"));
        a.save_checkpoint(&path).unwrap();
        let ck = headroom::checkpoint::load(&path).unwrap();
        let sm = &ck.moments["wte.weight"];
        assert_eq!(sm.m.dtype, headroom::DType::U8, "codes saved as bytes");
        assert!(sm.scales.is_some(), "with their scales");
        let mut b = make();
        b.resume(&path).unwrap();
        assert!(b.optimizer_state().unwrap() == a.optimizer_state().unwrap());
        for d in &data[3..] {
            assert_eq!(a.step(d).unwrap().loss, b.step(d).unwrap().loss);
        }
        assert!(a.parameters().unwrap() == b.parameters().unwrap());
        // An f32 run refuses the 8-bit checkpoint with a message saying why.
        let mut f = Trainer::new(Device::cpu(), model(), opt(), cfg(OptimizerState::F32)).unwrap();
        let e = f.resume(&path).unwrap_err().to_string();
        assert!(e.contains("--optimizer-state 8bit"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recovery_escalates_to_offload_and_loses_nothing() {
    small_window();
    let c = cfg(OptimizerState::F32);
    let data = common::batches(9, 4, 4, 32);
    let mut t = Trainer::new(Device::cpu(), model(), opt(), c.clone()).unwrap();
    let first = t.step(&data[0]).unwrap();
    assert!(!first.levers.offload_optimizer);
    // Capacity shrinks below what the state needs on the device: only a
    // plan with the moments in the host pool fits.
    let offload = Levers {
        offload_optimizer: true,
        ..Levers::default()
    };
    let smallest = |l: Levers| {
        Recompute::candidates(2)
            .into_iter()
            .map(|pol| {
                let ch = Choice {
                    micro_batch: 1,
                    recompute: pol,
                    levers: l,
                };
                simulate(&model(), opt(), &c, ch, None)
                    .unwrap()
                    .peak_reserved
            })
            .min()
            .unwrap()
    };
    let (on_device, offloaded) = (smallest(Levers::default()), smallest(offload));
    assert!(offloaded < on_device);
    let cap = (on_device + offloaded) / 2;
    t.device_mut().set_budget(Some(Budget::Bytes(cap)));
    let mut reports = vec![];
    for b in &data[1..] {
        reports.push(t.step(b).unwrap());
    }
    let r = &reports[0];
    assert!(r.recoveries >= 1, "{r:?}");
    assert!(r.levers.offload_optimizer, "escalated to offload: {r:?}");
    assert!(reports.iter().all(|r| !r.skipped));
    assert!(t.memory_stats().peak_reserved_bytes <= cap || r.recoveries > 0);
    println!(
        "budget {cap} (device-state floor {on_device}, offloaded {offloaded}): step 2 recovered {} time(s) into micro-batch {}, {}, levers {}",
        r.recoveries, r.micro_batch, r.recompute, r.levers
    );
    // Nothing lost: the same steps with those plans from the start of each
    // step give the same weights, bit for bit.
    let mut reference = Trainer::new(Device::cpu(), model(), opt(), c.clone()).unwrap();
    let first_plan = plan(&model(), opt(), &c, u64::MAX / 4, &[]).unwrap();
    reference.use_plan(first_plan);
    reference.step(&data[0]).unwrap();
    let choice = Choice {
        micro_batch: r.micro_batch,
        recompute: r.recompute,
        levers: r.levers,
    };
    let later = headroom::schedule::planner::plan_choice(&model(), opt(), &c, u64::MAX / 4, choice)
        .unwrap();
    reference.use_plan(later);
    for b in &data[1..] {
        reference.step(b).unwrap();
    }
    assert!(reference.parameters().unwrap() == t.parameters().unwrap());
}

#[test]
fn the_planner_reaches_for_levers_only_when_the_state_does_not_fit() {
    small_window();
    // Wide enough that the state outgrows the allocator's 2 MiB segments.
    let wide = || Gpt::new(common::gpt(2, 32, 256)).unwrap();
    let c = cfg(OptimizerState::Auto);
    let roomy = plan(&wide(), opt(), &c, 1 << 34, &[]).unwrap();
    assert_eq!(roomy.levers, Levers::default(), "{roomy}");
    // Under the smallest on-device plan's peak, a lever set still fits.
    let floor = Recompute::candidates(2)
        .into_iter()
        .map(|pol| {
            let ch = Choice {
                micro_batch: 1,
                recompute: pol,
                levers: Levers::default(),
            };
            simulate(&wide(), opt(), &c, ch, None)
                .unwrap()
                .peak_reserved
        })
        .min()
        .unwrap();
    let tight = plan(&wide(), opt(), &c, floor - 1, &[]).unwrap();
    assert_ne!(tight.levers, Levers::default(), "{tight}");
    assert!(tight.predicted_peak_bytes < floor);
    println!("{tight}");
    // With clipping on, release is never a candidate, and the plan says why.
    let clipped = plan(&wide(), AdamW::new(3e-3), &c, floor - 1, &[]).unwrap();
    assert!(!clipped.levers.gradient_release, "{clipped}");
    assert!(clipped
        .release_blocked
        .as_deref()
        .unwrap_or("")
        .contains("grad_clip"));
}
