//! Every op case of tests/common/ops.rs on every available backend against the
//! reference: one test body per op family, fanned out per backend (as candle's
//! `test_device!`). Each case is a small training graph (the op's outputs
//! weighted into a loss, and the gradients of every float operand) run in f32
//! on the backend under test and in f64 on the cpu backend; every output and
//! gradient is compared. Then the trainer itself on each backend.
//!
//! wgpu tests skip with a printed reason when no adapter exists, unless
//! HEADROOM_REQUIRE_WGPU is set (CI sets it: there, a missing adapter fails).

use headroom::graph::{autodiff, Graph, Value};
use headroom::rng::Rng;
use headroom::schedule::lower;
use headroom::{DType, Device, HostTensor};

mod common;
use common::ops;
use common::ops::case::OpCase;
use common::ops::harness::{draw, record, run_program, weighted_loss, Input};

#[derive(Clone, Copy, Debug)]
enum Dev {
    Cpu,
    Wgpu,
    Cuda,
}

fn open(d: Dev) -> Option<Device> {
    match d {
        Dev::Cpu => Some(Device::cpu()),
        Dev::Wgpu => match Device::wgpu() {
            Ok(dev) => Some(dev),
            Err(e) if std::env::var_os("HEADROOM_REQUIRE_WGPU").is_none() => {
                eprintln!("skipping the wgpu test: {e}");
                None
            }
            Err(e) => panic!("HEADROOM_REQUIRE_WGPU is set but wgpu is unusable: {e}"),
        },
        Dev::Cuda => match Device::cuda() {
            Ok(dev) => Some(dev),
            Err(e) if std::env::var_os("HEADROOM_REQUIRE_CUDA").is_none() => {
                eprintln!("skipping the cuda test: {e}");
                None
            }
            Err(e) => panic!("HEADROOM_REQUIRE_CUDA is set but cuda is unusable: {e}"),
        },
    }
}

/// Runs the case in `dt` on `dev`: every forward output, then every gradient.
fn run(dev: &mut Device, case: &OpCase, dt: DType) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(case.seed);
    let inputs = draw(&case.args, &mut rng, 1.0);
    let mut g = Graph::new();
    let (vals, wrt) = record(&mut g, &case.args, dt);
    let outs = (case.build)(&mut g, &vals).unwrap();
    let (loss, weights) = weighted_loss(&mut g, &outs, &mut rng);
    let wrt: Vec<Value> = wrt.iter().map(|w| w.1).collect();
    let grads = autodiff::backward(&mut g, loss, &wrt).unwrap();
    let mut outputs: Vec<Value> = outs.clone();
    outputs.extend(grads);
    // A forward output may also be read later: copy so each output is its own.
    let outputs: Vec<Value> = outputs.iter().map(|&v| g.scale(v, 1.0).unwrap()).collect();
    let prog = lower(&g, &outputs).unwrap();
    let mut ts: Vec<(Value, HostTensor)> = vals
        .iter()
        .zip(&inputs)
        .map(|(&v, x)| (v, x.tensor(&g, v)))
        .collect();
    for (r, w) in weights {
        ts.push((r, Input::F(w).tensor(&g, r)));
    }
    let out = run_program(dev, &g, &prog, &ts);
    assert_eq!(
        dev.memory_stats().allocated_bytes,
        0,
        "leaked device memory"
    );
    out
}

/// f32 on the backend against f64 on cpu; error relative to each tensor's
/// largest element.
const TOL: f64 = 1e-4;

fn check(d: Dev, case: &OpCase) {
    let name = &case.name;
    if matches!(d, Dev::Wgpu) && !case.wgpu {
        eprintln!("{name}: not a shape the wgpu kernels take");
        return;
    }
    let Some(mut dev) = open(d) else { return };
    let want = run(&mut Device::cpu(), case, DType::F64);
    // f32 everywhere; on backends with low-precision kernels also bf16 and f16,
    // against the cpu backend's own bf16/f16 results (the same rounding rules).
    let mut dtypes = vec![(DType::F32, TOL)];
    for (low, tol) in [(DType::BF16, 2e-2), (DType::F16, 5e-3)] {
        if !matches!(d, Dev::Cpu) && dev.supports(low) {
            dtypes.push((low, tol));
        }
    }
    for (dt, tol) in dtypes {
        let got = run(&mut dev, case, dt);
        let reference = if dt == DType::F32 {
            want.clone()
        } else {
            run(&mut Device::cpu(), case, dt)
        };
        assert_eq!(reference.len(), got.len());
        for (i, (w, g)) in reference.iter().zip(&got).enumerate() {
            let scale = w.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-6);
            let err = w.iter().zip(g).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
            if std::env::var_os("HEADROOM_PRINT_ERRORS").is_some() {
                println!("{name} {d:?} {dt}: tensor {i} rel err {err:.2e}");
            }
            assert!(
                err <= tol,
                "{name} on {d:?} in {dt}: tensor {i} off by {err:.2e} of its largest element"
            );
        }
    }
}

macro_rules! test_device {
    ($name:ident) => {
        mod $name {
            #[test]
            fn cpu() {
                super::$name(super::Dev::Cpu)
            }
            #[test]
            fn wgpu() {
                super::$name(super::Dev::Wgpu)
            }
            #[test]
            fn cuda() {
                super::$name(super::Dev::Cuda)
            }
        }
    };
}

/// One test per op family and backend, checking each of the family's cases.
macro_rules! parity_families {
    ($($test:ident: $family:ident),* $(,)?) => {
        $(
            fn $test(d: Dev) {
                for case in ops::cases_of(ops::Family::$family) {
                    check(d, &case);
                }
            }
            test_device!($test);
        )*
    };
}
for_each_family!(parity_families);

#[test]
fn every_wgsl_kernel_compiles() {
    match headroom::backend::wgpu::WgpuBackend::open(true) {
        Ok(Some((mut b, _))) => b.compile_all().unwrap(),
        Ok(None) if std::env::var_os("HEADROOM_REQUIRE_WGPU").is_none() => {
            eprintln!("skipping: no wgpu adapter")
        }
        other => panic!(
            "HEADROOM_REQUIRE_WGPU is set but wgpu is unusable: {:?}",
            other.err()
        ),
    }
}

/// A 2-layer GPT trainer on `dev` and its twin on cpu, same seed and settings,
/// with 2 heads of `head_dim` columns.
fn twin_trainers(
    dev: Device,
    precision: headroom::Precision,
    steps: u64,
    head_dim: usize,
) -> [headroom::Trainer<headroom::Gpt>; 2] {
    use headroom::{AdamW, Gpt, GptConfig, TrainConfig, Trainer};
    let gc = GptConfig {
        vocab_size: 256,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 2 * head_dim,
    };
    let cfg = TrainConfig {
        batch: 2,
        seq_len: 16,
        steps,
        precision,
        ..TrainConfig::default()
    };
    [dev, Device::cpu()].map(|d| {
        Trainer::new(
            d,
            Gpt::new(gc.clone()).unwrap(),
            AdamW::new(1e-2),
            cfg.clone(),
        )
        .unwrap()
    })
}

/// The trainer on each backend: the same first loss as cpu, falling losses, and
/// allocated bytes flat over many steps (no leaks).
fn training(d: Dev) {
    let Some(dev) = open(d) else { return };
    let data = headroom::data::Dataset::bundled();
    let [mut t, mut c] = twin_trainers(dev, headroom::Precision::F32, 100, 8);
    let b = t.next_batch(&data).unwrap();
    let first = t.step(&b).unwrap().loss;
    let b = c.next_batch(&data).unwrap();
    let want = c.step(&b).unwrap().loss;
    assert!(
        (first - want).abs() <= 1e-4 * want,
        "first loss {first} vs cpu {want}"
    );
    let resident = t.memory_stats().allocated_bytes;
    let mut last = 0.0;
    for _ in 1..100 {
        let b = t.next_batch(&data).unwrap();
        last = t.step(&b).unwrap().loss;
        assert_eq!(
            t.memory_stats().allocated_bytes,
            resident,
            "allocated bytes stay flat"
        );
    }
    assert!(last < first - 1.0, "loss falls: {first} → {last}");
}
test_device!(training);

/// Training in each low precision the backend has (f16 with loss scaling,
/// bf16): the first loss within rounding of the cpu backend's run in the same
/// precision, and falling losses.
fn training_low_precision(d: Dev) {
    use headroom::Precision;
    for (low, precision, tol) in [
        (DType::F16, Precision::F16, 2e-3),
        (DType::BF16, Precision::Bf16, 1e-2),
    ] {
        let Some(dev) = open(d) else { return };
        if matches!(d, Dev::Cpu) || !dev.supports(low) {
            continue;
        }
        train_low(dev, precision, tol, 8);
    }
}

/// As [`training_low_precision`] with heads of 16 columns, which the cuda
/// backend runs on tensor cores (kernels/attention_fa.cu); cuda only, the
/// other backends having no such path.
fn training_tensor_core_heads(d: Dev) {
    use headroom::Precision;
    for (low, precision, tol) in [
        (DType::F16, Precision::F16, 2e-3),
        (DType::BF16, Precision::Bf16, 1e-2),
    ] {
        let Some(dev) = open(d) else { return };
        if dev.supports(low) {
            train_low(dev, precision, tol, 16);
        }
    }
}
mod training_tensor_core_heads {
    #[test]
    fn cuda() {
        super::training_tensor_core_heads(super::Dev::Cuda)
    }
}

fn train_low(dev: Device, precision: headroom::Precision, tol: f32, head_dim: usize) {
    let data = headroom::data::Dataset::bundled();
    let [mut t, mut c] = twin_trainers(dev, precision, 30, head_dim);
    let (bt, bc) = (t.next_batch(&data).unwrap(), c.next_batch(&data).unwrap());
    let (first, want) = (t.step(&bt).unwrap().loss, c.step(&bc).unwrap().loss);
    assert!(
        (first - want).abs() <= tol * want,
        "{precision} first loss {first} vs cpu {want}"
    );
    let mut last = first;
    for _ in 1..30 {
        let b = t.next_batch(&data).unwrap();
        let r = t.step(&b).unwrap();
        if !r.skipped {
            last = r.loss;
        }
    }
    assert!(
        last < first - 0.5,
        "{precision} loss falls: {first} → {last}"
    );
}
test_device!(training_low_precision);

/// The 8-bit AdamW kernel on each backend against cpu's on the same inputs:
/// sizes with partial blocks and words, a zero block, magnitudes over 2^±12,
/// a bf16 copy, three steps from zero state.
fn adamw_q8_kernel(d: Dev) {
    use headroom::backend::{AdamWQ8Slot, AdamWStep};
    use headroom::optim::quant;
    use headroom::Shape;
    let Some(_) = open(d) else { return };
    let run = |dev: &mut Device, n: usize| -> [Vec<f64>; 5] {
        let mut rng = Rng::new(n as u64);
        let up = |dev: &mut Device, v: &[f64], dt: DType| {
            dev.upload(&HostTensor::from_f64_as(Shape::new(&[v.len()]), v, dt).unwrap())
                .unwrap()
        };
        let w: Vec<f64> = (0..n).map(|_| rng.normal() * 0.05).collect();
        let param = up(dev, &w, DType::F32);
        let m = dev.alloc(Shape::new(&[n]), DType::U8).unwrap();
        let v = dev.alloc(Shape::new(&[n]), DType::U8).unwrap();
        let nb = quant::blocks(n);
        let scales = up(dev, &vec![0.0; 2 * nb], DType::F32);
        let zeros = HostTensor::zeros(Shape::new(&[n]), DType::U8);
        dev.write(&m, &zeros).unwrap();
        dev.write(&v, &zeros).unwrap();
        let book: Vec<f64> = quant::codebook().iter().map(|&c| c as f64).collect();
        let book = up(dev, &book, DType::F32);
        let shadow = dev.alloc(Shape::new(&[n]), DType::BF16).unwrap();
        for t in 1..=3u64 {
            // Magnitudes from 2^-12 to 2^12 and exact zeros in the second block.
            let g: Vec<f64> = (0..n)
                .map(|i| {
                    if (2048..4096).contains(&i) {
                        0.0
                    } else {
                        rng.normal() * (2f64).powi((i % 25) as i32 - 12)
                    }
                })
                .collect();
            let grad = up(dev, &g, DType::F32);
            let step = AdamWStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                t,
                grad_scale: 0.5,
            };
            let slot = AdamWQ8Slot {
                param: param.view(),
                grad: grad.view(),
                m: m.view(),
                v: v.view(),
                scales: scales.view(),
                decay: true,
                shadow: Some(shadow.view()),
            };
            dev.backend_mut()
                .adamw_q8(&[slot], &step, book.view())
                .unwrap();
            dev.free(grad);
        }
        [
            param.view(),
            m.view(),
            v.view(),
            scales.view(),
            shadow.view(),
        ]
        .map(|r| dev.download(r).unwrap().to_f64_vec())
    };
    for n in [4096, 2048 * 3 + 5, 10_003] {
        let mut dev = open(d).unwrap();
        let got = run(&mut dev, n);
        let want = run(&mut Device::cpu(), n);
        let close = |i: usize| {
            got[i]
                .iter()
                .zip(&want[i])
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-30))
                .fold(0f64, f64::max)
        };
        let differ = |i: usize| got[i].iter().zip(&want[i]).filter(|(a, b)| a != b).count();
        let (p, s, sh) = (close(0), close(3), close(4));
        let (dm, dv) = (differ(1), differ(2));
        println!("{d:?} n {n}: param rel {p:.2e}, scales rel {s:.2e}, bf16 copy rel {sh:.2e}; m codes differ {dm}, v codes differ {dv} of {n}");
        assert!(
            p <= 1e-5 && s <= 1e-5 && sh <= 1e-2,
            "n {n}: param {p}, scales {s}, copy {sh}"
        );
        // A code differs only where rounding puts a value at a code boundary.
        assert!((dm + dv) * 1000 <= n, "n {n}: {dm} + {dv} codes differ");
    }
}
test_device!(adamw_q8_kernel);

/// The optimizer's levers change no bit on any backend: 8-bit state on the
/// device against 8-bit state streamed from the host pool, and f32 state on
/// the device against f32 state streamed, 3 steps each.
fn optimizer_levers(d: Dev) {
    use headroom::schedule::levers::{Levers, OptimizerState};
    use headroom::schedule::{update, Choice, Recompute};
    use headroom::{AdamW, Gpt, TrainConfig, Trainer};
    let Some(_) = open(d) else { return };
    // wte is 256 × 64: 8 quantised blocks, streamed in two chunks.
    update::set_window_elems(8192);
    let gc = common::gpt(2, 16, 64);
    let data = common::batches(11, 3, 2, 16);
    for q8 in [false, true] {
        let cfg = TrainConfig {
            batch: 2,
            seq_len: 16,
            optimizer_state: if q8 {
                OptimizerState::Q8
            } else {
                OptimizerState::F32
            },
            ..TrainConfig::default()
        };
        let [mut on, mut off] = [false, true].map(|host| {
            let choice = Choice {
                micro_batch: 2,
                recompute: Recompute::None,
                levers: Levers {
                    offload_optimizer: host,
                    state_8bit: q8,
                    gradient_release: false,
                },
            };
            let gpt = Gpt::new(gc.clone()).unwrap();
            Trainer::with_plan(open(d).unwrap(), gpt, AdamW::new(1e-2), cfg.clone(), choice)
                .unwrap()
        });
        for b in &data {
            assert_eq!(on.step(b).unwrap().loss, off.step(b).unwrap().loss);
        }
        assert!(
            on.parameters().unwrap() == off.parameters().unwrap(),
            "8-bit {q8}"
        );
        assert!(
            on.optimizer_state().unwrap() == off.optimizer_state().unwrap(),
            "8-bit {q8}"
        );
    }
}
test_device!(optimizer_levers);
