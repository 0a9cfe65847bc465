//! CUDA kernels (kernels/attention.cu, attention_fa.cu, optim.cu) run on the CPU through a
//! small emulator (tests/cuda_emu/emu.h: one fiber per thread, shared memory as
//! statics, barriers and warp shuffles as fiber switches) and are compared with
//! the cpu backend in f64. NVRTC only proves the kernels compile; this proves the
//! tiling, the causal mask, the online softmax and the backward's indexing on a
//! machine with no GPU. It needs a C++20 compiler (g++, or HEADROOM_CXX); without
//! one it skips, unless HEADROOM_REQUIRE_EMULATION is set (CI sets it).

#[path = "cuda_emu/replay.rs"]
mod replay;
#[path = "cuda_emu/support.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use replay::{io, updated, write_plan, Io, Ty};
use support::{build_driver, compiler};

use headroom::backend::cuda::ops::attention::{plan_backward, plan_forward};
use headroom::backend::cuda::optim;
use headroom::backend::AdamWStep;

use headroom::graph::{autodiff, Graph};
use headroom::rng::Rng;
use headroom::schedule::{execute, lower, Mode};
use headroom::{DType, Device, HostTensor, Shape};

fn write_f32(path: &Path, v: &[f64]) {
    let bytes: Vec<u8> = v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f64> {
    let b = std::fs::read(path).unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect()
}

/// `(B, T, H, K, D)`: batch, positions, query heads, key/value heads, head size.
type Dims = (usize, usize, usize, usize, usize);

/// `out` and `dqkv` (with `dout` as the output's gradient) on the cpu backend in f64.
fn reference(qkv: &[f64], dout: &[f64], (b, t, nh, nkv, hd): Dims) -> [Vec<f64>; 2] {
    let (c, w) = (nh * hd, (nh + 2 * nkv) * hd);
    let mut g = Graph::new();
    let x = g.param("qkv", Shape::new(&[b, t, w]), DType::F64).unwrap();
    let r = g.input("dout", Shape::new(&[b, t, c]), DType::F64).unwrap();
    let out = g.gqa_attention(x, nh, nkv).unwrap();
    let p = g.mul(out, r).unwrap();
    let loss = g.sum(p, &[0, 1, 2]).unwrap();
    let grads = autodiff::backward(&mut g, loss, &[x]).unwrap();
    let outputs = [g.scale(out, 1.0).unwrap(), g.scale(grads[0], 1.0).unwrap()];
    let prog = lower(&g, &outputs).unwrap();
    let mut dev = Device::cpu();
    let tx = dev
        .upload(&HostTensor::from_f64_as(Shape::new(&[b, t, w]), qkv, DType::F64).unwrap())
        .unwrap();
    let tr = dev
        .upload(&HostTensor::from_f64_as(Shape::new(&[b, t, c]), dout, DType::F64).unwrap())
        .unwrap();
    let bind: HashMap<_, _> = [(x, tx.view()), (r, tr.view())].into_iter().collect();
    let res = execute(&mut dev, &g, &prog, &bind, Mode::Train).unwrap();
    let v: Vec<Vec<f64>> = res
        .iter()
        .map(|t| dev.download(t.view()).unwrap().to_f64_vec())
        .collect();
    [v[0].clone(), v[1].clone()]
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("headroom-emu-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Largest difference relative to the reference's largest element.
fn rel_err(want: &[f64], got: &[f64]) -> f64 {
    assert_eq!(want.len(), got.len());
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    want.iter()
        .zip(got)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// Runs a replaying driver on the plan in `dir`.
fn replay(exe: &Path, dir: &Path) {
    let out = Command::new(exe).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "the emulated kernels failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tensor-core (attention_fa.cu) head sizes.
const FA_HEADS: [usize; 5] = [16, 32, 48, 64, 128];

/// Runs the host's forward and backward plans for one path on the emulator
/// and returns (out, dqkv, lse).
fn emulate_attention(
    exe: &Path,
    dir: &Path,
    dt: DType,
    (b, t, nh, nkv, hd): Dims,
    tensor_cores: bool,
) -> [Vec<f64>; 3] {
    let (c, w) = (nh * hd, (nh + 2 * nkv) * hd);
    let qkv_shape = Shape::new(&[b, t, w]);
    let (ty, f) = (Ty::T, Ty::F32);
    let (qkv_io, out_io) = (io("qkv", ty, b * t * w), io("out", ty, b * t * c));
    let lse_io = io("lse", f, b * nh * t);
    // The host's plans; the backward is fed the forward's out and lse.
    let forward = plan_forward(&qkv_shape, nh, nkv, tensor_cores).unwrap();
    write_plan(dir, &forward, dt, &[qkv_io], &[out_io, lse_io]);
    replay(exe, dir);
    let backward = plan_backward(&qkv_shape, nh, nkv, tensor_cores).unwrap();
    let ins = [qkv_io, out_io, lse_io, io("dout", ty, b * t * c)];
    write_plan(dir, &backward, dt, &ins, &[io("dqkv", ty, b * t * w)]);
    replay(exe, dir);
    ["out", "dqkv", "lse"].map(|n| read_f32(&dir.join(format!("{n}.f32"))))
}

/// The tolerances of attention: a few units of each dtype's rounding (the
/// worst seen: 5e-4 for f16 and 3.7e-3 for bf16).
const ATTENTION_DTYPES: [(DType, &str, f64); 3] = [
    (DType::F32, "f32", 1e-4),
    (DType::F16, "f16", 1.5e-3),
    (DType::BF16, "bf16", 1e-2),
];

/// Each of `shapes` (dims, CUDA cores too) on the emulator against the cpu
/// backend: on CUDA cores where asked, and on tensor cores where the backend
/// would pick them (f16/bf16, an instantiated head size). Prints the worst
/// errors of each path and dtype.
fn attention_cases(exe: &Path, dir: &Path, shapes: &[(Dims, bool)], seed: u64) {
    let mut worst: HashMap<String, (f64, f64)> = HashMap::new();
    for (k, &(dims, cores)) in shapes.iter().enumerate() {
        let (b, t, nh, nkv, hd) = dims;
        let (c, w) = (nh * hd, (nh + 2 * nkv) * hd);
        let mut rng = Rng::new(seed + k as u64);
        let qkv: Vec<f64> = (0..b * t * w).map(|_| rng.normal()).collect();
        let dout: Vec<f64> = (0..b * t * c).map(|_| rng.normal()).collect();
        for (dt, name, tol) in ATTENTION_DTYPES {
            let tc = dt != DType::F32 && FA_HEADS.contains(&hd);
            let mut paths = Vec::new();
            if cores {
                paths.push((false, "cores"));
            }
            if tc {
                paths.push((true, "tensor-cores"));
            }
            if paths.is_empty() {
                continue;
            }
            // Both sides see the inputs rounded to the storage type.
            let round = |v: &[f64], s: &[usize]| {
                HostTensor::from_f64_as(Shape::new(s), v, dt)
                    .unwrap()
                    .to_f64_vec()
            };
            let qkv = round(&qkv, &[b, t, w]);
            let dout = round(&dout, &[b, t, c]);
            let [want_out, want_dqkv] = reference(&qkv, &dout, dims);
            write_f32(&dir.join("qkv.f32"), &qkv);
            write_f32(&dir.join("dout.f32"), &dout);
            for (tensor_cores, path) in paths {
                let [out, dqkv, lse] = emulate_attention(exe, dir, dt, dims, tensor_cores);
                let out_err = rel_err(&want_out, &out);
                let grad_err = rel_err(&want_dqkv, &dqkv);
                let what = format!("{path} B{b} T{t} H{nh} K{nkv} (hd {hd}) {name}");
                println!("{what}: out {out_err:.2e}, dqkv {grad_err:.2e}");
                assert!(out_err <= tol, "{what}: out off by {out_err:.2e}");
                assert!(grad_err <= tol, "{what}: dqkv off by {grad_err:.2e}");
                // lse is not a graph output; dqkv depends on it, so check it is sane.
                assert_eq!(lse.len(), b * nh * t);
                assert!(lse.iter().all(|x| x.is_finite()), "{what}: lse not finite");
                let w = worst.entry(format!("{path} {name}")).or_default();
                *w = (w.0.max(out_err), w.1.max(grad_err));
            }
        }
    }
    let mut worst: Vec<_> = worst.into_iter().collect();
    worst.sort_by(|a, b| a.0.cmp(&b.0));
    for (what, (o, g)) in worst {
        println!("worst {what}: out {o:.2e}, dqkv {g:.2e}");
    }
}

#[test]
fn attention_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let dir = scratch("attention");
    let exe = build_driver(&cxx, &dir, "attention");
    // (B, T, C, H, CUDA cores too): T off the 64-row tiles and the 32-key
    // tiles of head size 128; head sizes 16, 4, 128, 64, 48 on both paths, 32
    // on tensor cores; T = 1000 (16 row blocks, many key tiles) on tensor
    // cores only, with B·H = 1 to keep the emulator within a minute.
    let shapes = [
        (2, 80, 32, 2, true),
        (1, 37, 8, 2, true),
        (1, 70, 256, 2, true),
        (1, 50, 128, 2, true),
        (2, 40, 96, 2, true),
        (1, 70, 96, 2, false),
        (1, 70, 128, 2, false),
        (1, 37, 64, 2, false),
        (1, 1000, 64, 1, false),
        (1, 1000, 128, 1, false),
    ];
    // Multi-head: K = H.
    let shapes: Vec<(Dims, bool)> = shapes
        .iter()
        .map(|&(b, t, c, nh, cores)| ((b, t, nh, nh, c / nh), cores))
        .collect();
    attention_cases(&exe, &dir, &shapes, 7);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Grouped-query attention: query head h reads key/value head h / (H/K) in
/// place, and a key/value head's dk/dv add its group's query heads (the
/// dk/dv kernels' grid is over key/value heads). Groups of 2, 3 and 4 and
/// multi-query (K = 1), with T off the tiles and T = 1.
#[test]
fn gqa_attention_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let dir = scratch("gqa_attention");
    let exe = build_driver(&cxx, &dir, "attention");
    // ((B, T, H, K, D), CUDA cores too): head sizes 16, 32, 64 and 128 on both
    // paths, 8 (CUDA cores only) and 48 (tensor cores only); T = 70 and 100
    // pass the 64-row tiles (and 32-key tiles at 128).
    let shapes: [(Dims, bool); 8] = [
        ((2, 37, 4, 2, 16), true),
        ((1, 70, 4, 1, 32), true),
        ((2, 21, 4, 2, 8), true),
        ((1, 45, 6, 2, 64), true),
        ((1, 70, 4, 1, 128), true),
        ((1, 100, 4, 2, 48), false),
        ((3, 1, 2, 1, 16), true),
        ((1, 33, 8, 2, 16), false),
    ];
    attention_cases(&exe, &dir, &shapes, 70);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Σg² in one launch over several tensors, and one AdamW step over all of them,
/// against the formulas in f64 (the same step as the cpu backend's AdamW).
#[test]
fn optim_kernels_match_reference() {
    let Some(cxx) = compiler() else { return };
    let dir = scratch("optim");
    let exe = build_driver(&cxx, &dir, "optim");
    // The second tensor needs several grid-stride rounds of 64 blocks × 256.
    let sizes = [1000usize, 70_000, 3];
    let n: usize = sizes.iter().sum();
    let mut rng = Rng::new(11);
    let mut draw =
        |s: f64| -> Vec<f64> { (0..n).map(|_| (rng.normal() * s) as f32 as f64).collect() };
    let (p, g, m) = (draw(1.0), draw(1.0), draw(0.1));
    let v: Vec<f64> = draw(0.1).iter().map(|x| x * x).collect();
    // Tensor k of each is its own file, `<name><k>`.
    let names: Vec<Vec<String>> = ["p", "g", "m", "v"]
        .iter()
        .map(|f| (0..sizes.len()).map(|k| format!("{f}{k}")).collect())
        .collect();
    let mut at = 0;
    for (k, &len) in sizes.iter().enumerate() {
        for (f, x) in names.iter().zip([&p, &g, &m, &v]) {
            write_f32(&dir.join(format!("{}.f32", f[k])), &x[at..at + len]);
        }
        at += len;
    }
    let shapes: Vec<Shape> = sizes.iter().map(|&s| Shape::new(&[s])).collect();
    fn io_of(f: &[String], k: usize, len: usize, kept: bool) -> Io<'_> {
        (if kept { updated } else { io })(&f[k], Ty::F32, len)
    }
    let grads: Vec<Io> = (0..sizes.len())
        .map(|k| io_of(&names[1], k, sizes[k], false))
        .collect();

    let plan = optim::plan_sum_squares(&shapes.iter().collect::<Vec<_>>()).unwrap();
    write_plan(&dir, &plan, DType::F32, &grads, &[]);
    replay(&exe, &dir);
    let partial = read_f32(&dir.join("workspace.f32"));
    assert_eq!(partial.len(), 64 * sizes.len());
    let mut at = 0;
    for (k, &len) in sizes.iter().enumerate() {
        let want: f64 = g[at..at + len].iter().map(|x| x * x).sum();
        let got: f64 = partial[64 * k..64 * (k + 1)].iter().sum();
        let err = (got - want).abs() / want;
        println!("sum_squares tensor {k} ({len}): rel err {err:.2e}");
        assert!(err < 1e-5, "Σg² of tensor {k}: {got} vs {want}");
        at += len;
    }

    // Step t = 3: bias corrections 1 − β³; gradients unscaled by 1/2; weight
    // decay on the first tensor only.
    let step = AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        t: 3,
        grad_scale: 0.5,
    };
    // Low-precision copies: bf16 for the first tensor, f16 for the second,
    // none for the third (its copy slot is a buffer nothing writes).
    let copies = [Some(DType::BF16), Some(DType::F16), None];
    let params: Vec<optim::AdamWParam> = shapes
        .iter()
        .enumerate()
        .map(|(k, s)| optim::AdamWParam {
            shape: s,
            decay: k == 0,
            shadow: copies[k],
        })
        .collect();
    let plan = optim::plan_adamw(&params, &step).unwrap();
    let copy_names: Vec<String> = (0..sizes.len()).map(|k| format!("low{k}")).collect();
    let outs: Vec<Io> = (0..sizes.len())
        .flat_map(|k| {
            let [p, m, v] = [0, 2, 3].map(|f| io_of(&names[f], k, sizes[k], true));
            let copy = match copies[k] {
                Some(d) => io(&copy_names[k], Ty::Of(d), sizes[k]),
                None => io(&copy_names[k], Ty::F32, 0),
            };
            [p, m, v, copy]
        })
        .collect();
    write_plan(&dir, &plan, DType::F32, &grads, &outs);
    replay(&exe, &dir);

    let (lr, wd, b1, b2, eps, gscale) = (1e-2, 0.1, 0.9f64, 0.95f64, 1e-8, 0.5);
    let (bc1, bc2) = (1.0 - b1.powi(3), 1.0 - b2.powi(3));
    let (mut wp, mut wm, mut wv) = (p.clone(), m.clone(), v.clone());
    for i in 0..n {
        let decay = if i < sizes[0] { 1.0 - lr * wd } else { 1.0 };
        let gr = g[i] * gscale;
        wm[i] = b1 * m[i] + (1.0 - b1) * gr;
        wv[i] = b2 * v[i] + (1.0 - b2) * gr * gr;
        wp[i] = p[i] * decay - lr * (wm[i] / bc1) / ((wv[i] / bc2).sqrt() + eps);
    }
    for (f, name, want) in [(0, "p", &wp), (2, "m", &wm), (3, "v", &wv)] {
        let got: Vec<f64> = names[f]
            .iter()
            .flat_map(|file| read_f32(&dir.join(format!("{file}.f32"))))
            .collect();
        let err = rel_err(want, &got);
        println!("adamw {name}: rel err {err:.2e}");
        assert!(err < 1e-5, "adamw {name} off by {err:.2e}");
    }
    // Each copy is the kernel's own updated weights, rounded as a cast
    // rounds: bit for bit.
    for (k, copy) in copies.iter().enumerate() {
        let Some(d) = *copy else { continue };
        let updated = read_f32(&dir.join(format!("{}.f32", names[0][k])));
        let want = HostTensor::from_f64_as(Shape::new(&[sizes[k]]), &updated, d)
            .unwrap()
            .to_f64_vec();
        let got = read_f32(&dir.join(format!("{}.f32", copy_names[k])));
        let off = want.iter().zip(&got).filter(|(a, b)| a != b).count();
        println!(
            "adamw {d} copy of tensor {k}: {off} of {} elements differ",
            sizes[k]
        );
        assert_eq!(
            off, 0,
            "the {d} copy of tensor {k} is not the rounded update"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 8-bit AdamW kernel (kernels/optim.cu `adamw_q8_f32`) against the cpu
/// backend's from the same state: sizes with partial blocks, a zero block,
/// magnitudes over 2^±12, bf16 and f16 copies and none; state made by two
/// cpu steps first, so codes and scales are not trivial.
#[test]
fn adamw_q8_kernel_matches_cpu() {
    use headroom::backend::AdamWQ8Slot;
    use headroom::optim::quant;
    let Some(cxx) = compiler() else { return };
    let dir = scratch("optim_q8");
    let exe = build_driver(&cxx, &dir, "optim");
    let sizes = [4096usize, 2048 * 3 + 5, 10_003];
    let copies = [Some(DType::BF16), None, Some(DType::F16)];
    let mut rng = Rng::new(21);
    let step = |t| AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        t,
        grad_scale: 0.5,
    };
    let grad = |rng: &mut Rng, n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| match i {
                2048..4096 => 0.0,
                _ => (rng.normal() * 2f64.powi((i % 25) as i32 - 12)) as f32 as f64,
            })
            .collect()
    };
    let mut cpu = Device::cpu();
    let up = |d: &mut Device, v: &[f64], dt: DType| {
        d.upload(&HostTensor::from_f64_as(Shape::new(&[v.len()]), v, dt).unwrap())
            .unwrap()
    };
    let book: Vec<f64> = quant::codebook().iter().map(|&c| c as f64).collect();
    let book_t = up(&mut cpu, &book, DType::F32);
    write_f32(&dir.join("book.f32"), &book);
    struct P {
        p: headroom::backend::DeviceTensor,
        m: headroom::backend::DeviceTensor,
        v: headroom::backend::DeviceTensor,
        s: headroom::backend::DeviceTensor,
        low: Option<headroom::backend::DeviceTensor>,
        g: Vec<f64>,
    }
    let mut ps = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        let w: Vec<f64> = (0..n)
            .map(|_| (rng.normal() * 0.05) as f32 as f64)
            .collect();
        let p = up(&mut cpu, &w, DType::F32);
        let zeros = vec![0.0; n];
        let (m, v) = (
            up(&mut cpu, &zeros, DType::F32),
            up(&mut cpu, &zeros, DType::F32),
        );
        // Codes are u8: zero bytes come from a fresh allocation's zeroing.
        let (m, v) = {
            cpu.free(m);
            cpu.free(v);
            let z = HostTensor::zeros(Shape::new(&[n]), DType::U8);
            let (a, b) = (
                cpu.alloc(Shape::new(&[n]), DType::U8).unwrap(),
                cpu.alloc(Shape::new(&[n]), DType::U8).unwrap(),
            );
            cpu.write(&a, &z).unwrap();
            cpu.write(&b, &z).unwrap();
            (a, b)
        };
        let s = up(&mut cpu, &vec![0.0; 2 * quant::blocks(n)], DType::F32);
        let low = copies[k].map(|d| cpu.alloc(Shape::new(&[n]), d).unwrap());
        ps.push(P {
            p,
            m,
            v,
            s,
            low,
            g: vec![],
        });
    }
    let run_cpu = |cpu: &mut Device, ps: &[P], grads: &[headroom::backend::DeviceTensor], t| {
        let slots: Vec<AdamWQ8Slot> = ps
            .iter()
            .zip(grads)
            .enumerate()
            .map(|(k, (p, g))| AdamWQ8Slot {
                param: p.p.view(),
                grad: g.view(),
                m: p.m.view(),
                v: p.v.view(),
                scales: p.s.view(),
                decay: k != 1,
                shadow: p.low.as_ref().map(|l| l.view()),
            })
            .collect();
        cpu.backend_mut()
            .adamw_q8(&slots, &step(t), book_t.view())
            .unwrap();
    };
    // Two cpu steps make the state the kernel starts from.
    for t in 1..=2 {
        let grads: Vec<_> = sizes
            .iter()
            .map(|&n| up(&mut cpu, &grad(&mut rng, n), DType::F32))
            .collect();
        run_cpu(&mut cpu, &ps, &grads, t);
    }
    for (k, p) in ps.iter_mut().enumerate() {
        p.g = grad(&mut rng, sizes[k]);
        for (name, t) in [("p", &p.p), ("m", &p.m), ("v", &p.v), ("s", &p.s)] {
            let h = cpu.download(t.view()).unwrap().to_f64_vec();
            write_f32(&dir.join(format!("{name}{k}.f32")), &h);
        }
        write_f32(&dir.join(format!("g{k}.f32")), &p.g);
    }
    let params: Vec<optim::AdamWParam> = ps
        .iter()
        .enumerate()
        .map(|(k, p)| optim::AdamWParam {
            shape: p.p.shape(),
            decay: k != 1,
            shadow: copies[k],
        })
        .collect();
    let plan = optim::plan_adamw_q8(&params, &step(3)).unwrap();
    let names: Vec<[String; 5]> = (0..sizes.len())
        .map(|k| ["p", "m", "v", "s", "low"].map(|f| format!("{f}{k}")))
        .collect();
    let gnames: Vec<String> = (0..sizes.len()).map(|k| format!("g{k}")).collect();
    let mut ins: Vec<Io> = (0..sizes.len())
        .map(|k| io(&gnames[k], Ty::F32, sizes[k]))
        .collect();
    ins.push(io("book", Ty::F32, quant::CODEBOOK_LEN));
    let outs: Vec<Io> = (0..sizes.len())
        .flat_map(|k| {
            let n = sizes[k];
            let nm = &names[k];
            [
                updated(&nm[0], Ty::F32, n),
                updated(&nm[1], Ty::Of(DType::U8), n),
                updated(&nm[2], Ty::Of(DType::U8), n),
                updated(&nm[3], Ty::F32, 2 * quant::blocks(n)),
                match copies[k] {
                    Some(d) => io(&nm[4], Ty::Of(d), n),
                    None => io(&nm[4], Ty::F32, 0),
                },
            ]
        })
        .collect();
    write_plan(&dir, &plan, DType::F32, &ins, &outs);
    replay(&exe, &dir);
    let grads: Vec<_> = ps.iter().map(|p| up(&mut cpu, &p.g, DType::F32)).collect();
    run_cpu(&mut cpu, &ps, &grads, 3);
    for (k, p) in ps.iter().enumerate() {
        let want: Vec<Vec<f64>> = [&p.p, &p.m, &p.v, &p.s]
            .iter()
            .map(|t| cpu.download(t.view()).unwrap().to_f64_vec())
            .collect();
        let got: Vec<Vec<f64>> = (0..4)
            .map(|f| read_f32(&dir.join(format!("{}.f32", names[k][f]))))
            .collect();
        let err = rel_err(&want[0], &got[0]);
        let scales = rel_err(&want[3], &got[3]);
        let differ: usize = (1..3)
            .map(|f| want[f].iter().zip(&got[f]).filter(|(a, b)| a != b).count())
            .sum();
        println!(
            "adamw_q8 tensor {k} ({}): param rel err {err:.2e}, scales {scales:.2e}, {differ} of {} codes differ",
            sizes[k],
            2 * sizes[k]
        );
        assert!(err < 1e-6 && scales < 1e-6, "tensor {k}: {err} / {scales}");
        assert!(
            differ * 1000 <= sizes[k],
            "tensor {k}: {differ} codes differ"
        );
        if let (Some(d), Some(low)) = (copies[k], &p.low) {
            let want = cpu.download(low.view()).unwrap().to_f64_vec();
            let got = read_f32(&dir.join(format!("{}.f32", names[k][4])));
            let off = want.iter().zip(&got).filter(|(a, b)| a != b).count();
            println!("adamw_q8 {d} copy of tensor {k}: {off} elements differ");
            assert_eq!(off, 0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
