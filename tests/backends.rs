//! Every op on every available backend against the reference: one test body per
//! op family, fanned out per backend (as candle's `test_device!`). Each body
//! builds a small training graph (the op's outputs weighted into a loss, and the
//! gradients of every float operand) in f32 on the backend under test and in f64
//! on the cpu backend, and compares every output and gradient.
//!
//! wgpu tests skip with a printed reason when no adapter exists, unless
//! HEADROOM_REQUIRE_WGPU is set (CI sets it: there, a missing adapter fails).

use std::collections::HashMap;

use headroom::graph::{autodiff, Graph, Value};
use headroom::rng::Rng;
use headroom::schedule::{execute, lower, Mode};
use headroom::{DType, Device, HostTensor, Shape};

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

enum Arg {
    F(&'static [usize]),
    Ids(&'static [usize], i32),
}

type Build = fn(&mut Graph, &[Value]) -> headroom::Result<Vec<Value>>;

/// Runs the case in `dt` on `dev`: every forward output, then every gradient.
fn run(dev: &mut Device, args: &[Arg], dt: DType, build: Build, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let mut host = Vec::new();
    let mut vals = Vec::new();
    let mut wrt = Vec::new();
    for (i, a) in args.iter().enumerate() {
        match a {
            Arg::F(s) => {
                let v = g.param(&format!("x{i}"), Shape::new(s), dt).unwrap();
                let x: Vec<f64> = (0..Shape::new(s).numel()).map(|_| rng.normal()).collect();
                host.push(HostTensor::from_f64_as(Shape::new(s), &x, dt).unwrap());
                wrt.push(v);
                vals.push(v);
            }
            Arg::Ids(s, n) => {
                let v = g
                    .input(&format!("x{i}"), Shape::new(s), DType::I32)
                    .unwrap();
                let x: Vec<i32> = (0..Shape::new(s).numel())
                    .map(|_| rng.below(*n as usize) as i32)
                    .collect();
                host.push(HostTensor::from_i32(Shape::new(s), &x).unwrap());
                vals.push(v);
            }
        }
    }
    let outs = build(&mut g, &vals).unwrap();
    let mut loss = None;
    let mut extra = Vec::new();
    for (k, &o) in outs.iter().enumerate() {
        let s = g.shape(o).clone();
        // The output's own dtype: a loss is f32 even for low-precision logits.
        let odt = g.dtype(o);
        let r = g.input(&format!("r{k}"), s.clone(), odt).unwrap();
        let w: Vec<f64> = (0..s.numel()).map(|_| rng.normal()).collect();
        extra.push((r, HostTensor::from_f64_as(s.clone(), &w, odt).unwrap()));
        let p = g.mul(o, r).unwrap();
        let axes: Vec<usize> = (0..s.rank()).collect();
        let t = g.sum(p, &axes).unwrap();
        loss = Some(match loss {
            None => t,
            Some(l) => g.add(l, t).unwrap(),
        });
    }
    let grads = autodiff::backward(&mut g, loss.unwrap(), &wrt).unwrap();
    let mut outputs: Vec<Value> = outs.clone();
    outputs.extend(grads);
    // A forward output may also be read later: copy so each output is its own.
    let outputs: Vec<Value> = outputs.iter().map(|&v| g.scale(v, 1.0).unwrap()).collect();
    let prog = lower(&g, &outputs).unwrap();
    let mut ts = Vec::new();
    for (&v, h) in vals.iter().zip(&host) {
        ts.push((v, dev.upload(h).unwrap()));
    }
    for (r, h) in &extra {
        ts.push((*r, dev.upload(h).unwrap()));
    }
    let bind: HashMap<Value, _> = ts.iter().map(|(v, t)| (*v, t.view())).collect();
    let res = execute(dev, &g, &prog, &bind, Mode::Train).unwrap();
    let out = res
        .iter()
        .map(|t| dev.download(t.view()).unwrap().to_f64_vec())
        .collect();
    for t in res {
        dev.free(t);
    }
    for (_, t) in ts {
        dev.free(t);
    }
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

fn check(d: Dev, name: &str, args: &[Arg], build: Build) {
    let Some(mut dev) = open(d) else { return };
    let seed = name.bytes().map(|b| b as u64).sum();
    let want = run(&mut Device::cpu(), args, DType::F64, build, seed);
    // f32 everywhere; on backends with low-precision kernels also bf16 and f16,
    // against the cpu backend's own bf16/f16 results (the same rounding rules).
    let mut dtypes = vec![(DType::F32, TOL)];
    for (low, tol) in [(DType::BF16, 2e-2), (DType::F16, 5e-3)] {
        if !matches!(d, Dev::Cpu) && dev.supports(low) {
            dtypes.push((low, tol));
        }
    }
    for (dt, tol) in dtypes {
        let got = run(&mut dev, args, dt, build, seed);
        let reference = if dt == DType::F32 {
            want.clone()
        } else {
            run(&mut Device::cpu(), args, dt, build, seed)
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

fn matmul(d: Dev) {
    check(d, "mm", &[Arg::F(&[5, 7]), Arg::F(&[7, 3])], |g, v| {
        Ok(vec![g.matmul(v[0], v[1])?])
    });
    check(d, "mm_t", &[Arg::F(&[7, 5]), Arg::F(&[3, 7])], |g, v| {
        Ok(vec![g.matmul_t(v[0], v[1], true, true)?])
    });
    check(
        d,
        "bmm_shared",
        &[Arg::F(&[2, 19, 17]), Arg::F(&[17, 33])],
        |g, v| Ok(vec![g.matmul(v[0], v[1])?]),
    );
    check(
        d,
        "bmm_bt",
        &[Arg::F(&[3, 4, 9]), Arg::F(&[3, 5, 9])],
        |g, v| Ok(vec![g.matmul_t(v[0], v[1], false, true)?]),
    );
}
test_device!(matmul);

fn elementwise(d: Dev) {
    check(d, "add", &[Arg::F(&[3, 4, 8]), Arg::F(&[8])], |g, v| {
        Ok(vec![g.add(v[0], v[1])?])
    });
    check(d, "mul", &[Arg::F(&[3, 8]), Arg::F(&[3, 8])], |g, v| {
        Ok(vec![g.mul(v[0], v[1])?])
    });
    check(
        d,
        "bias_gelu",
        &[Arg::F(&[3, 7, 10]), Arg::F(&[10])],
        |g, v| Ok(vec![g.bias_gelu(v[0], v[1])?]),
    );
    check(d, "scale_gelu", &[Arg::F(&[70])], |g, v| {
        let s = g.scale(v[0], 1.5)?;
        Ok(vec![g.gelu(s)?])
    });
}
test_device!(elementwise);

fn layernorm(d: Dev) {
    check(
        d,
        "ln",
        &[Arg::F(&[3, 5, 16]), Arg::F(&[16]), Arg::F(&[16])],
        |g, v| Ok(vec![g.layernorm(v[0], v[1], v[2], 1e-5)?]),
    );
}
test_device!(layernorm);

fn attention(d: Dev) {
    check(d, "attn", &[Arg::F(&[2, 7, 24])], |g, v| {
        Ok(vec![g.attention(v[0], 2)?])
    });
    check(d, "attn_1h", &[Arg::F(&[1, 5, 12])], |g, v| {
        Ok(vec![g.attention(v[0], 1)?])
    });
}
test_device!(attention);

fn softmax_and_cross_entropy(d: Dev) {
    check(d, "softmax", &[Arg::F(&[4, 9])], |g, v| {
        Ok(vec![g.softmax(v[0])?])
    });
    check(
        d,
        "ce",
        &[Arg::F(&[3, 5, 11]), Arg::Ids(&[3, 5], 11)],
        |g, v| Ok(vec![g.cross_entropy(v[0], v[1])?]),
    );
}
test_device!(softmax_and_cross_entropy);

fn embedding(d: Dev) {
    check(
        d,
        "emb",
        &[Arg::Ids(&[2, 6], 5), Arg::F(&[5, 8])],
        |g, v| Ok(vec![g.embedding(v[0], v[1])?]),
    );
}
test_device!(embedding);

fn views_and_reductions(d: Dev) {
    check(d, "transpose", &[Arg::F(&[2, 3, 4])], |g, v| {
        Ok(vec![g.transpose(v[0], 0, 2)?])
    });
    check(d, "split", &[Arg::F(&[4, 6])], |g, v| {
        g.split(v[0], 1, &[2, 4])
    });
    check(d, "split_unused", &[Arg::F(&[5, 3])], |g, v| {
        Ok(vec![g.split(v[0], 0, &[2, 3])?[0]])
    });
    check(d, "concat", &[Arg::F(&[2, 3]), Arg::F(&[2, 2])], |g, v| {
        Ok(vec![g.concat(&[v[0], v[1]], 1)?])
    });
    check(d, "reshape", &[Arg::F(&[2, 6])], |g, v| {
        let r = g.reshape(v[0], [3, 4])?;
        Ok(vec![g.gelu(r)?])
    });
    check(d, "sum_mid", &[Arg::F(&[2, 3, 4])], |g, v| {
        Ok(vec![g.sum(v[0], &[1])?])
    });
    check(d, "mean_outer", &[Arg::F(&[2, 3, 4])], |g, v| {
        Ok(vec![g.mean(v[0], &[0, 2])?])
    });
    check(d, "expand", &[Arg::F(&[2, 4])], |g, v| {
        Ok(vec![g.expand(v[0], &[1], [2, 3, 4])?])
    });
}
test_device!(views_and_reductions);

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

/// A 2-layer GPT trainer on `dev` and its twin on cpu, same seed and settings.
fn twin_trainers(
    dev: Device,
    precision: headroom::Precision,
    steps: u64,
) -> [headroom::Trainer<headroom::Gpt>; 2] {
    use headroom::{AdamW, Gpt, GptConfig, TrainConfig, Trainer};
    let gc = GptConfig {
        vocab_size: 256,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
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
    let [mut t, mut c] = twin_trainers(dev, headroom::Precision::F32, 100);
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

fn transpose_of_one_axis_is_a_copy(d: Dev) {
    check(d, "transpose_same", &[Arg::F(&[3, 4])], |g, v| {
        Ok(vec![g.transpose(v[0], 1, 1)?])
    });
}
test_device!(transpose_of_one_axis_is_a_copy);

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
        train_low(dev, precision, tol);
    }
}

fn train_low(dev: Device, precision: headroom::Precision, tol: f32) {
    let data = headroom::data::Dataset::bundled();
    let [mut t, mut c] = twin_trainers(dev, precision, 30);
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
