//! The scheduler on cpu: recompute is bit-identical, micro-batching matches the
//! full batch, predictions match measured peaks, and a step survives running
//! out of memory at any allocation.

use headroom::data::Batch;
use headroom::memory::{Budget, FaultyMemory};
use headroom::rng::Rng;
use headroom::schedule::{plan, simulate, Choice, Recompute};
use headroom::{AdamW, Device, Error, Gpt, GptConfig, HostTensor, Precision, TrainConfig, Trainer};

mod common;

/// Three layers: enough blocks for every recompute policy.
fn small() -> GptConfig {
    common::gpt(3, 32, 32)
}

fn cfg(batch: usize, seq: usize) -> TrainConfig {
    TrainConfig {
        batch,
        seq_len: seq,
        steps: 10,
        eval_batches: 1,
        ..TrainConfig::default()
    }
}

fn batches(n: usize, b: usize, t: usize) -> Vec<Batch> {
    common::batches(11, n, b, t)
}

const POLICIES: [Recompute; 5] = [
    Recompute::None,
    Recompute::Cheap,
    Recompute::Every(1),
    Recompute::Every(2),
    Recompute::Every(4),
];

/// Trains with a fixed plan on cpu and returns (losses, final parameters).
fn run_with(
    choice: Choice,
    c: &TrainConfig,
    data: &[Batch],
) -> (Vec<f32>, Vec<(String, HostTensor)>) {
    let model = Gpt::new(small()).unwrap();
    let mut t =
        Trainer::with_plan(Device::cpu(), model, AdamW::new(3e-3), c.clone(), choice).unwrap();
    let losses = data.iter().map(|b| t.step(b).unwrap().loss).collect();
    (losses, t.parameters().unwrap())
}

#[test]
fn recompute_gives_bit_identical_training() {
    let c = cfg(4, 32);
    let data = batches(3, 4, 32);
    let base = run_with(
        Choice {
            micro_batch: 4,
            recompute: Recompute::None,
            levers: Default::default(),
        },
        &c,
        &data,
    );
    for pol in &POLICIES[1..] {
        let r = run_with(
            Choice {
                micro_batch: 4,
                recompute: *pol,
                levers: Default::default(),
            },
            &c,
            &data,
        );
        assert_eq!(
            r.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            base.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{pol}: losses"
        );
        assert!(r.1 == base.1, "{pol}: parameters differ");
    }
}

#[test]
fn recompute_lowers_the_simulated_peak() {
    let model = Gpt::new(small()).unwrap();
    let c = cfg(16, 32);
    let peak = |pol| {
        let s = simulate(
            &model,
            AdamW::new(1e-3),
            &c,
            Choice {
                micro_batch: 16,
                recompute: pol,
                levers: Default::default(),
            },
            None,
        )
        .unwrap();
        (s.peak_allocated, s.breakdown.activations)
    };
    let (none, act_none) = peak(Recompute::None);
    let (cheap, _) = peak(Recompute::Cheap);
    let (every, act_every) = peak(Recompute::Every(1));
    assert!(cheap < none, "cheap {cheap} < none {none}");
    assert!(every < cheap, "every-block {every} < cheap {cheap}");
    assert!(
        act_every * 2 < act_none,
        "activations {act_every} vs {act_none}"
    );
}

#[test]
fn micro_batches_match_the_full_batch() {
    let c = cfg(4, 32);
    let data = batches(3, 4, 32);
    let full = run_with(
        Choice {
            micro_batch: 4,
            recompute: Recompute::None,
            levers: Default::default(),
        },
        &c,
        &data,
    );
    for mb in [2, 1] {
        for pol in [Recompute::None, Recompute::Every(1)] {
            let r = run_with(
                Choice {
                    micro_batch: mb,
                    recompute: pol,
                    levers: Default::default(),
                },
                &c,
                &data,
            );
            for (a, b) in r.0.iter().zip(&full.0) {
                assert!(
                    (a - b).abs() <= 2e-6 * b.abs(),
                    "mb {mb} {pol}: loss {a} vs {b}"
                );
            }
            // AdamW moves each weight by at most about lr per step; the updates
            // agree to 0.1% of that (gradients differ only in summation order).
            let tol = 1e-3 * 3e-3 * data.len() as f64;
            for ((name, x), (_, y)) in r.1.iter().zip(&full.1) {
                let (x, y) = (x.to_f64_vec(), y.to_f64_vec());
                let err = x
                    .iter()
                    .zip(&y)
                    .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(err <= tol, "mb {mb} {pol}: {name} differs by {err}");
            }
        }
    }
}

/// Predicted (simulated) against measured (cpu) peak reserved, for every
/// candidate the planner would consider; returns the worst relative error.
fn check_predictions(gc: GptConfig, c: TrainConfig) -> f64 {
    let data = batches(2, c.batch, c.seq_len);
    let mut worst = 0f64;
    let mbs: Vec<usize> = (1..=c.batch).rev().filter(|m| c.batch % m == 0).collect();
    for &mb in &mbs {
        for pol in POLICIES {
            let choice = Choice {
                micro_batch: mb,
                recompute: pol,
                levers: Default::default(),
            };
            let model = Gpt::new(gc.clone()).unwrap();
            let predicted = simulate(&model, AdamW::new(1e-3), &c, choice, None)
                .unwrap()
                .peak_reserved;
            // The same sequence for real: setup, step, eval, step; under a
            // budget equal to the prediction, which it must never pass.
            let mut dev = Device::cpu();
            dev.set_budget(Some(Budget::Bytes(predicted)));
            let mut t =
                Trainer::with_plan(dev, model, AdamW::new(1e-3), c.clone(), choice).unwrap();
            t.step(&data[0]).unwrap();
            t.loss(&data[0]).unwrap();
            t.step(&data[1]).unwrap();
            let measured = t.memory_stats().peak_reserved_bytes;
            assert!(
                measured <= predicted,
                "{choice:?}: measured {measured} passed the budget {predicted}"
            );
            let err = (predicted as f64 - measured as f64).abs() / measured as f64;
            assert!(
                err <= 0.02,
                "{choice:?}: predicted {predicted}, measured {measured}"
            );
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn predictions_match_measured_peaks_for_tiny() {
    let worst = check_predictions(GptConfig::tiny(), cfg(8, 64));
    println!("tiny: worst prediction error {:.4}%", worst * 100.0);
}

#[test]
fn predictions_match_measured_peaks_for_a_deeper_model() {
    let gc = GptConfig {
        vocab_size: 256,
        block_size: 128,
        n_layer: 6,
        n_head: 4,
        n_embd: 128,
    };
    let worst = check_predictions(gc, cfg(4, 128));
    println!("6-layer: worst prediction error {:.4}%", worst * 100.0);
}

#[test]
fn nothing_fits_is_a_typed_error_naming_the_budget_that_would() {
    let model = Gpt::new(small()).unwrap();
    let c = cfg(8, 32);
    let e = plan(&model, AdamW::new(1e-3), &c, 1 << 20, &[]).unwrap_err();
    let Error::NoPlanFits { needed, .. } = e else {
        panic!("expected NoPlanFits, got {e:?}")
    };
    assert!(needed > 1 << 20);
    assert!(
        e.to_string()
            .contains("Raise the budget (Device::set_budget) to at least"),
        "{e}"
    );
    // The budget it names does work.
    let p = plan(&model, AdamW::new(1e-3), &c, needed, &[]).unwrap();
    assert!(p.predicted_peak_bytes <= needed);
}

#[test]
fn the_planner_prefers_no_recompute_when_memory_is_plenty() {
    let model = Gpt::new(small()).unwrap();
    let p = plan(&model, AdamW::new(1e-3), &cfg(8, 32), 1 << 32, &[]).unwrap();
    assert_eq!((p.micro_batch, p.recompute), (8, Recompute::None));
    let b = p.breakdown;
    assert_eq!(b.total(), p.predicted_peak_bytes);
    assert!(b.weights > 0 && b.optimizer_state == 2 * b.weights && b.activations > 0);
}

fn faulty_trainer(
    c: &TrainConfig,
) -> (
    Trainer<Gpt>,
    std::rc::Rc<std::cell::RefCell<headroom::memory::Faults>>,
) {
    let mut faults = None;
    let dev = Device::cpu_wrapped(|raw| {
        let (m, f) = FaultyMemory::new(raw);
        faults = Some(f);
        m
    });
    let t = Trainer::new(dev, Gpt::new(small()).unwrap(), AdamW::new(3e-3), c.clone()).unwrap();
    (t, faults.unwrap())
}

#[test]
fn a_failure_at_any_allocation_of_a_step_is_recovered_without_loss() {
    let c = cfg(4, 16);
    let data = batches(3, 4, 16);
    let (mut clean, _) = faulty_trainer(&c);
    clean.step(&data[0]).unwrap();
    let before = clean.memory_stats().num_allocs;
    clean.step(&data[1]).unwrap();
    let allocs = clean.memory_stats().num_allocs - before;
    let clean_alloc = clean.memory_stats().allocated_bytes;
    clean.step(&data[2]).unwrap();
    let clean_params = clean.parameters().unwrap();
    assert!(allocs > 100, "a step makes many allocations ({allocs})");

    for i in 0..allocs {
        let (mut t, _) = faulty_trainer(&c);
        t.step(&data[0]).unwrap();
        t.device_mut().fail_allocation_in(i);
        let r = t.step(&data[1]).unwrap();
        assert_eq!(
            r.recoveries, 1,
            "failure at allocation {i} was recovered once"
        );
        assert_eq!(
            t.memory_stats().allocated_bytes,
            clean_alloc,
            "no leak after recovery {i}"
        );
        t.step(&data[2]).unwrap();
        assert!(
            t.parameters().unwrap() == clean_params,
            "recovery at {i}: weights differ"
        );
    }
}

#[test]
fn a_device_allocation_that_fails_twice_is_recovered_too() {
    let c = cfg(16, 32);
    let data = batches(3, 16, 32);
    let (mut clean, faults) = faulty_trainer(&c);
    clean.step(&data[0]).unwrap();
    clean.device_mut().empty_cache();
    let before = faults.borrow().attempts;
    clean.step(&data[1]).unwrap();
    let k = faults.borrow().attempts - before;
    assert!(
        k >= 2,
        "the step allocates segments on an empty cache ({k})"
    );
    clean.step(&data[2]).unwrap();
    let clean_params = clean.parameters().unwrap();
    for i in 0..k {
        let (mut t, faults) = faulty_trainer(&c);
        t.step(&data[0]).unwrap();
        t.device_mut().empty_cache();
        {
            let mut f = faults.borrow_mut();
            f.script.extend(std::iter::repeat_n(false, i as usize));
            // The device allocation and its retry after flushing the cache fail.
            f.script.extend([true, true]);
        }
        let r = t.step(&data[1]).unwrap();
        assert!(r.recoveries >= 1, "device failure {i} was recovered");
        t.step(&data[2]).unwrap();
        assert!(
            t.parameters().unwrap() == clean_params,
            "device failure {i}: weights differ"
        );
    }
}

#[test]
fn a_device_that_shrinks_mid_run_gets_a_new_plan() {
    let c = cfg(8, 32);
    let data = batches(4, 8, 32);
    let (mut t, faults) = faulty_trainer(&c);
    t.step(&data[0]).unwrap();
    let first = t.plan().unwrap().clone();
    assert_eq!(first.micro_batch, 8);
    // Another process takes memory: only enough is left for a smaller plan.
    let model = Gpt::new(small()).unwrap();
    let smallest = simulate(
        &model,
        AdamW::new(3e-3),
        &c,
        Choice {
            micro_batch: 1,
            recompute: Recompute::Every(1),
            levers: Default::default(),
        },
        None,
    )
    .unwrap()
    .peak_reserved;
    let cap = (smallest + first.predicted_peak_bytes) / 2;
    faults.borrow_mut().capacity = Some(cap);
    t.device_mut().empty_cache();
    let r = t.step(&data[1]).unwrap();
    assert!(r.recoveries >= 1);
    let now = t.plan().unwrap().clone();
    assert!(
        now.predicted_peak_bytes <= cap,
        "new plan fits what is left"
    );
    assert_ne!(
        (now.micro_batch, now.recompute),
        (first.micro_batch, first.recompute)
    );
    for b in &data[2..] {
        let r = t.step(b).unwrap();
        assert!(r.loss.is_finite());
    }
    assert!(t.memory_stats().reserved_bytes <= cap);
}

#[test]
fn recovery_gives_up_with_a_typed_error_when_nothing_can_fit() {
    let c = cfg(16, 32);
    let data = batches(2, 16, 32);
    let (mut t, _) = faulty_trainer(&c);
    t.step(&data[0]).unwrap();
    let resident = t.memory_stats().allocated_bytes;
    // Less than the weights and optimizer state already take: no plan can fit.
    t.device_mut().set_budget(Some(Budget::Bytes(resident)));
    let e = t.step(&data[1]).unwrap_err();
    assert!(matches!(e, Error::RecoveryFailed { .. }), "{e:?}");
    assert_eq!(t.memory_stats().allocated_bytes, resident, "nothing leaked");
}

#[test]
fn library_workspace_is_planned_for_and_allocated() {
    let model = Gpt::new(small()).unwrap();
    let mut c = cfg(4, 32);
    c.workspace_bytes = 3 << 20;
    let p = plan(&model, AdamW::new(1e-3), &c, 1 << 32, &[]).unwrap();
    assert!(p.breakdown.workspace >= 3 << 20, "{:?}", p.breakdown);
    let without = plan(&model, AdamW::new(1e-3), &cfg(4, 32), 1 << 32, &[]).unwrap();
    assert!(p.predicted_peak_bytes > without.predicted_peak_bytes);
    // The real run reserves exactly what the plan predicted.
    let data = batches(2, 4, 32);
    let mut t = Trainer::with_plan(Device::cpu(), model, AdamW::new(1e-3), c, p.choice()).unwrap();
    t.step(&data[0]).unwrap();
    t.loss(&data[0]).unwrap();
    t.step(&data[1]).unwrap();
    assert_eq!(t.memory_stats().peak_reserved_bytes, p.predicted_peak_bytes);
}

/// The cross-entropy backward writes dlogits over the logits when they die
/// there (buffer donation): no allocation for it, the same bits as when the
/// logits must stay (here: also a program output), and a lower peak.
#[test]
fn cross_entropy_backward_reuses_the_dying_logits() {
    use headroom::graph::{autodiff, Graph};
    use headroom::schedule::lower;
    use headroom::{DType, Shape};
    use std::collections::HashMap;

    let (n, v) = (64, 300);
    let mut g = Graph::new();
    let x = g.param("x", Shape::new(&[n, v]), DType::F32).unwrap();
    let t = g.input("t", Shape::new(&[n]), DType::I32).unwrap();
    let logits = g.scale(x, 2.0).unwrap();
    let loss = g.cross_entropy(logits, t).unwrap();
    let dx = autodiff::backward(&mut g, loss, &[x]).unwrap()[0];
    let mut rng = Rng::new(5);
    let xs: Vec<f64> = (0..n * v).map(|_| rng.normal()).collect();
    let ts: Vec<i32> = (0..n).map(|_| rng.below(v) as i32).collect();

    let mut results = Vec::new();
    for keep_logits in [false, true] {
        let mut outs = vec![loss, dx];
        if keep_logits {
            outs.push(logits);
        }
        let prog = lower(&g, &outs).unwrap();
        let mut dev = Device::cpu();
        let tx = dev
            .upload(&HostTensor::from_f64_as(Shape::new(&[n, v]), &xs, DType::F32).unwrap())
            .unwrap();
        let tt = dev
            .upload(&HostTensor::from_i32(Shape::new(&[n]), &ts).unwrap())
            .unwrap();
        let bind: HashMap<_, _> = [(x, tx.view()), (t, tt.view())].into_iter().collect();
        results.push(traced_run(
            &mut dev,
            &g,
            &prog,
            &bind,
            "cross_entropy_backward",
            0,
        ));
    }
    let (donated, kept) = (&results[0], &results[1]);
    assert_eq!(donated.0, 0, "dlogits took the logits' block");
    assert_eq!(kept.0, 1, "logits still needed: dlogits allocated");
    assert_eq!(donated.2, kept.2, "same bits either way");
    let logits_bytes = (n * v * 4) as u64;
    assert_eq!(kept.1 - donated.1, logits_bytes, "peak lower by the logits");
}

#[test]
fn every_recompute_policy_lowers_the_same_traced_graph() {
    use headroom::schedule::step::StepCompiler;
    let model = Gpt::new(small()).unwrap();
    let mut compiler = StepCompiler::new(Precision::F32);
    let mut flops = vec![];
    for recompute in POLICIES {
        let choice = Choice {
            micro_batch: 2,
            recompute,
            levers: Default::default(),
        };
        flops.push(compiler.step_flops(&model, 4, 32, choice).unwrap());
    }
    assert_eq!(compiler.graphs_traced(), 1, "one graph for five policies");
    // Recompute re-runs forward ops: every policy but none costs more.
    assert!(flops[1..].iter().all(|&f| f > flops[0]), "{flops:?}");
    assert_eq!(compiler.count_blocks(&model, 32).unwrap(), 3);
    assert_eq!(
        compiler.graphs_traced(),
        2,
        "the logits graph is the second"
    );
}

/// A training step's loss and dlogits are one Op::CrossEntropyFused, recorded
/// in the backward phase: under every recompute policy it runs once, is never
/// recomputed, and is the logits' last reader (their Free follows it at once
/// and no later instruction reads them), so dlogits may take their block and
/// nothing can read the overwritten logits.
#[test]
fn the_fused_loss_runs_once_as_the_last_reader_of_the_logits() {
    use headroom::graph::{NodeId, Op};
    use headroom::schedule::step::{GraphKey, GraphKind, ProgramKey, StepCompiler};
    use headroom::schedule::Instr;
    let model = Gpt::new(small()).unwrap();
    let mut compiler = StepCompiler::new(Precision::F32);
    for recompute in POLICIES {
        let graph = GraphKey {
            kind: GraphKind::Train,
            micro_batch: 2,
            seq: 32,
        };
        let key = ProgramKey {
            graph,
            recompute: Some(recompute),
            accumulate: false,
            release: false,
        };
        let (sg, p) = compiler.program(&model, key).unwrap();
        let g = &sg.graph;
        let fused: Vec<NodeId> = (0..g.nodes().len() as u32)
            .map(NodeId)
            .filter(|&n| matches!(g.node(n).op, Op::CrossEntropyFused { .. }))
            .collect();
        assert_eq!(fused.len(), 1, "{recompute}: one fused loss");
        let f = fused[0];
        let logits = g.node(f).inputs[0];
        let runs = |i: Instr| p.instrs.iter().filter(|&&x| x == i).count();
        assert_eq!(runs(Instr::Run(f)), 1, "{recompute}");
        assert_eq!(
            runs(Instr::Recompute(f)),
            0,
            "{recompute}: never recomputed"
        );
        let at = p.instrs.iter().position(|&i| i == Instr::Run(f)).unwrap();
        let after = &p.instrs[at + 1..];
        let frees = after.iter().take_while(|i| matches!(i, Instr::Free(_)));
        assert!(
            frees.clone().any(|&i| i == Instr::Free(logits)),
            "{recompute}: the logits die at the fused loss"
        );
        for &i in after {
            if let Instr::Run(n) | Instr::Recompute(n) = i {
                assert!(
                    !g.node(n).inputs.contains(&logits),
                    "{recompute}: {} reads the logits after the fused loss",
                    g.node(n).op.name()
                );
            }
        }
    }
}

/// Op::CrossEntropyFused writes dlogits over the logits when they die there:
/// no allocation for it, the same bits as when the logits must stay (a
/// program output) or are bound (not the program's to overwrite), and a peak
/// lower by the logits.
#[test]
fn the_fused_loss_reuses_the_dying_logits() {
    use headroom::graph::{Graph, Op};
    use headroom::schedule::lower;
    use headroom::{DType, Shape};
    use std::collections::HashMap;

    let (n, v, classes) = (64, 384, 300);
    let mut g = Graph::new();
    let x = g.param("x", Shape::new(&[n, v]), DType::F32).unwrap();
    let t = g.input("t", Shape::new(&[n]), DType::I32).unwrap();
    let s = g.input("s", Shape::scalar(), DType::F32).unwrap();
    let logits = g.scale(x, 2.0).unwrap();
    let fused = g
        .apply(Op::CrossEntropyFused { classes }, &[logits, t, s])
        .unwrap();
    let mut rng = Rng::new(6);
    let xs: Vec<f64> = (0..n * v).map(|_| rng.normal()).collect();
    let ts: Vec<i32> = (0..n).map(|_| rng.below(classes) as i32).collect();

    let mut results = Vec::new();
    for keep_logits in [false, true] {
        let mut outs = fused.clone();
        if keep_logits {
            outs.push(logits);
        }
        let prog = lower(&g, &outs).unwrap();
        let mut dev = Device::cpu();
        let host = |s: &[usize], v: &[f64]| HostTensor::from_f64_as(Shape::new(s), v, DType::F32);
        let tx = dev.upload(&host(&[n, v], &xs).unwrap()).unwrap();
        let ts = HostTensor::from_i32(Shape::new(&[n]), &ts).unwrap();
        let tt = dev.upload(&ts).unwrap();
        let tsd = dev.upload(&host(&[], &[0.5]).unwrap()).unwrap();
        let bind: HashMap<_, _> = [(x, tx.view()), (t, tt.view()), (s, tsd.view())]
            .into_iter()
            .collect();
        let logits_bytes = (n * v * 4) as u64;
        results.push(traced_run(
            &mut dev,
            &g,
            &prog,
            &bind,
            "cross_entropy_fused",
            logits_bytes,
        ));
    }
    let (donated, kept) = (&results[0], &results[1]);
    assert_eq!(donated.0, 0, "dlogits took the logits' block");
    assert_eq!(kept.0, 1, "logits still needed: dlogits allocated");
    assert_eq!(donated.2, kept.2, "same bits either way");
    assert!(
        donated.2[1]
            .chunks(v)
            .all(|row| row[classes..].iter().all(|&d| d == 0.0)),
        "padding logits get no gradient"
    );
    let logits_bytes = (n * v * 4) as u64;
    assert_eq!(kept.1 - donated.1, logits_bytes, "peak lower by the logits");
}

/// Runs `prog` on `dev` with a memory trace: how many allocations `op` made of
/// at least `min_bytes`, the peak allocated bytes, and the first two outputs.
fn traced_run(
    dev: &mut Device,
    g: &headroom::graph::Graph,
    prog: &headroom::schedule::Program,
    bind: &headroom::schedule::Bindings,
    op: &str,
    min_bytes: u64,
) -> (usize, u64, Vec<Vec<f64>>) {
    use headroom::memory::timeline::EventKind;
    use headroom::schedule::{execute, Mode};
    dev.start_trace();
    let res = execute(dev, g, prog, bind, Mode::Train).unwrap();
    let events = dev.take_trace().unwrap();
    let allocs = events
        .iter()
        .filter(|e| e.kind == EventKind::Alloc && e.op == op && e.bytes >= min_bytes)
        .count();
    let peak = events.iter().map(|e| e.allocated).max().unwrap();
    let vals: Vec<Vec<f64>> = res[..2]
        .iter()
        .map(|r| dev.download(r.view()).unwrap().to_f64_vec())
        .collect();
    for r in res {
        dev.free(r);
    }
    (allocs, peak, vals)
}
