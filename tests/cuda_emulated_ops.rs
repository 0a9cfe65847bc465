//! The CUDA kernel files that tests/cuda_emulated.rs leaves out (layernorm,
//! rmsnorm, rope, softmax, cross-entropy, embedding, elementwise, cast,
//! reduce, shape) run
//! on the CPU through the same emulator (tests/cuda_emu/emu.h) and are compared
//! with the cpu backend in f64. Each driver, tests/cuda_emu/<file>.cpp, lists
//! its kernels and replays the host's own plan of each op (the `plan_*`
//! functions of src/backend/cuda/ops/<family>.rs, written out by
//! tests/cuda_emu/replay.rs), so its launches are the backend's.
//!
//! Shapes are small and off the 256-thread blocks on purpose, so that per-row
//! loops wrap and grids end in a partial block; output buffers start as NaN, so
//! an element that no kernel writes fails the comparison. Inputs are rounded to
//! the storage dtype on both sides. Like tests/cuda_emulated.rs this needs a C++20
//! compiler (g++, or HEADROOM_CXX) and skips without one, unless
//! HEADROOM_REQUIRE_EMULATION is set.

#[path = "cuda_emu/harness.rs"]
mod harness;
#[path = "cuda_emu/replay.rs"]
mod replay;
#[path = "cuda_emu/support.rs"]
mod support;

use harness::{
    check, elementwise_case, normal, round, run_cross_entropy, run_embedding, run_layernorm,
    run_rmsnorm, s, Driver, Reference, DTYPES, LAYERNORM_OUTPUTS, RMSNORM_OUTPUTS,
};
use support::compiler;

use replay::{io, Io, Ty};

use headroom::backend::cuda::ops::{cast, layernorm, reduce, rmsnorm, rope, shape, softmax};
use headroom::backend::cuda::plan::OpPlan;
use headroom::graph::{autodiff, Op, Value};
use headroom::rng::Rng;
use headroom::{DType, Shape};

/// Op::LayerNorm and Op::LayerNormBackward: y, the saved mean and rstd, and dx,
/// dw, db from the backward kernels fed the forward's mean and rstd.
#[test]
fn layernorm_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "layernorm");
    let eps = 1e-5;
    // Rows of 300, 37 and 513 (row groups of 64, 32 and 96 threads, off the
    // vector widths but for 300 in f32); 600 rows: several backward blocks.
    // tests/cuda_emulated_fused.rs has the row groups' own cases.
    let shapes: [&[usize]; 4] = [&[5, 300], &[2, 3, 37], &[2, 513], &[600, 37]];
    for (k, &shape) in shapes.iter().enumerate() {
        let sh = Shape::new(shape);
        for (dt, name, tol) in DTYPES {
            let plans = (
                &layernorm::plan_forward(&sh, eps, dt, true),
                &layernorm::plan_backward(&sh, dt, true),
            );
            let (want, got) = run_layernorm(&d, &sh, 100 + k as u64, dt, plans);
            let outputs: Vec<(&str, &[f64], &[f64])> = LAYERNORM_OUTPUTS
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(&f, (w, g))| (f, w.as_slice(), g.as_slice()))
                .collect();
            check(&format!("layernorm {sh} {name}"), tol, &outputs);
        }
    }
}

/// The symbols of a plan's launches for `dt`, in order.
fn kernels(plan: &OpPlan, dt: DType) -> Vec<String> {
    plan.launches
        .iter()
        .map(|l| l.entry.symbol(dt).unwrap())
        .collect()
}

/// Op::RmsNorm and Op::RmsNormBackward: y, the saved rstd, and dx, dw from the
/// backward kernels fed the forward's rstd, through each kind of launch the
/// plans pick (asserted): vectorised row groups, scalar ones (C off the
/// vector width, or operands not 16-byte aligned) and a block per row.
#[test]
fn rmsnorm_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "rmsnorm");
    let eps = 1e-5;
    // (shape, aligned, forward stem for f32, for bf16/f16). Rows of 300 (row
    // groups of 64; 300 is a multiple of f32's 4 only), 37 and 513 (off every
    // width), 64 (one warp a row, 16-byte loads in every dtype); 600 rows give
    // several backward blocks; 8200 columns pass the row groups' 8192.
    type Case = (&'static [usize], bool, &'static str, &'static str);
    let (vec, one, wide) = (
        "rmsnorm_forward_rows_vec",
        "rmsnorm_forward_rows",
        "rmsnorm_forward",
    );
    let cases: [Case; 7] = [
        (&[5, 300], true, vec, one),
        (&[2, 3, 37], true, one, one),
        (&[2, 513], true, one, one),
        (&[600, 37], true, one, one),
        (&[4, 10, 64], true, vec, vec),
        (&[7, 64], false, one, one),
        (&[2, 8200], true, wide, wide),
    ];
    let mut worst = [0f64; 3];
    for (k, &(shape, aligned, f32_stem, low_stem)) in cases.iter().enumerate() {
        let sh = Shape::new(shape);
        for (j, (dt, name, tol)) in DTYPES.into_iter().enumerate() {
            let (forward, backward) = (
                rmsnorm::plan_forward(&sh, eps, dt, aligned),
                rmsnorm::plan_backward(&sh, dt, aligned),
            );
            let stem = if dt == DType::F32 { f32_stem } else { low_stem };
            assert_eq!(kernels(&forward, dt), [format!("{stem}_{name}")], "{sh}");
            let (want, got) =
                run_rmsnorm(&d, &sh, 150 + k as u64, (dt, dt, dt), (&forward, &backward));
            let outputs: Vec<(&str, &[f64], &[f64])> = RMSNORM_OUTPUTS
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(&f, (w, g))| (f, w.as_slice(), g.as_slice()))
                .collect();
            check(
                &format!("rmsnorm {sh} aligned {aligned} {name}"),
                tol,
                &outputs,
            );
            for (_, w, g) in &outputs {
                worst[j] = worst[j].max(harness::rel_err(w, g));
            }
        }
    }
    for (j, (_, name, _)) in DTYPES.iter().enumerate() {
        println!("rmsnorm, worst {name}: {:.2e}", worst[j]);
    }
}

/// Op::Rope forward and inverse (its gradient) on multi-head, grouped and
/// multi-query layouts, against the cpu backend; the v heads must come
/// through bit for bit. The kernel's angles are f32 (position × inv_freq),
/// the cpu's f64, so they part by about T·2⁻²⁴ radians: T stays at most 40
/// here, where that is under f32's tolerance.
#[test]
fn rope_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "rope");
    // ([B, T, (H + 2K)·D], H, K, theta): head sizes 8, 4, 6, 12, 16 and 64;
    // a small theta turns the slow pairs by more than a little by T = 40.
    type Case = ([usize; 3], usize, usize, f64);
    let cases: [Case; 6] = [
        ([1, 6, 24], 1, 1, 10000.0),
        ([2, 5, 16], 2, 1, 100.0),
        ([2, 3, 48], 4, 2, 10000.0),
        ([2, 7, 72], 4, 1, 500.0),
        ([1, 40, 128], 4, 2, 100.0),
        ([2, 9, 384], 4, 1, 10000.0),
    ];
    let mut worst = [0f64; 3];
    for (k, &(shape, h, kv, theta)) in cases.iter().enumerate() {
        let n: usize = shape.iter().product();
        let hd = shape[2] / (h + 2 * kv);
        let x = normal(&mut Rng::new(250 + k as u64), n, 1.0, 0.0);
        for (j, (dt, name, tol)) in DTYPES.into_iter().enumerate() {
            let x = round(&x, dt);
            let mut re = Reference::new();
            let xv = re.input(&shape, &x);
            let turn = |inverse| Op::Rope {
                n_head: h,
                n_kv_head: kv,
                theta,
                inverse,
            };
            let fwd = re.g.apply(turn(false), &[xv]).unwrap()[0];
            let inv = re.g.apply(turn(true), &[xv]).unwrap()[0];
            let want = re.eval(&[fwd, inv]);
            d.write("x", &x);
            let mut got = Vec::new();
            for (inverse, out) in [(false, "out"), (true, "back")] {
                let plan = rope::plan_forward(&Shape::new(&shape), h, kv, theta, inverse).unwrap();
                assert_eq!(kernels(&plan, dt), [format!("rope_{name}")]);
                d.replay(&plan, dt, &[io("x", Ty::T, n)], &[io(out, Ty::T, n)]);
                got.push(d.read(out));
            }
            let case = format!("rope {shape:?} H{h} K{kv} (hd {hd}) theta {theta} {name}");
            check(
                &case,
                tol,
                &[("out", &want[0], &got[0]), ("inverse", &want[1], &got[1])],
            );
            // The v heads: copied, so exact.
            let v0 = (h + kv) * hd;
            for row in 0..n / shape[2] {
                let at = row * shape[2];
                for g in &got {
                    assert_eq!(
                        &g[at + v0..at + shape[2]],
                        &x[at + v0..at + shape[2]],
                        "{case}"
                    );
                }
            }
            worst[j] = worst[j]
                .max(harness::rel_err(&want[0], &got[0]))
                .max(harness::rel_err(&want[1], &got[1]));
        }
    }
    for (j, (_, name, _)) in DTYPES.iter().enumerate() {
        println!("rope, worst {name}: {:.2e}", worst[j]);
    }
}

/// Op::Softmax and Op::SoftmaxBackward (fed the forward kernel's y).
#[test]
fn softmax_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "softmax");
    // (shape, logit scale): many of the last case's logits pass 88, where expf
    // overflows f32 unless the row max is taken off first.
    let cases: [(&[usize], f64); 3] = [(&[5, 300], 1.0), (&[3, 7], 1.0), (&[2, 1000], 40.0)];
    for (k, &(shape, scale)) in cases.iter().enumerate() {
        let sh = Shape::new(shape);
        let (r, v) = (sh.rows(), sh.last());
        let mut rng = Rng::new(200 + k as u64);
        let x = normal(&mut rng, r * v, scale, 0.0);
        let dy = normal(&mut rng, r * v, 1.0, 0.0);
        for (dt, name, tol) in DTYPES {
            let (x, dy) = (round(&x, dt), round(&dy, dt));
            let mut re = Reference::new();
            let xv = re.param(shape, &x);
            let dyv = re.input(shape, &dy);
            let y = re.g.softmax(xv).unwrap();
            let gr = re.grads(&[(y, dyv)], &[xv]);
            let want = re.eval(&[y, gr[0]]);

            d.write("x", &x);
            d.write("dy", &dy);
            let (xs, ys, dys) = (
                io("x", Ty::T, r * v),
                io("y", Ty::T, r * v),
                io("dy", Ty::T, r * v),
            );
            d.replay(&softmax::plan_forward(&sh), dt, &[xs], &[ys]);
            // The backward is fed the forward's own y.
            d.replay(
                &softmax::plan_backward(&sh),
                dt,
                &[ys, dys],
                &[io("dx", Ty::T, r * v)],
            );
            check(
                &format!("softmax {sh} ×{scale} {name}"),
                tol,
                &[
                    ("y", &want[0], &d.read("y")),
                    ("dx", &want[1], &d.read("dx")),
                ],
            );
        }
    }
}

/// Op::CrossEntropy (per-row losses into the workspace, then their mean) and
/// Op::CrossEntropyBackward, with a loss gradient other than 1.
#[test]
fn cross_entropy_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "cross_entropy");
    // 257 rows: the mean's loop over rows wraps the 256 threads.
    let cases: [(&[usize], f64); 3] = [(&[5, 300], 1.0), (&[257, 3], 2.0), (&[3, 1000], 40.0)];
    for (k, &(shape, scale)) in cases.iter().enumerate() {
        let sh = Shape::new(shape);
        let (r, v) = (sh.rows(), sh.last());
        let mut rng = Rng::new(300 + k as u64);
        let x = normal(&mut rng, r * v, scale, 0.0);
        let mut targets: Vec<i32> = (0..r).map(|_| rng.below(v) as i32).collect();
        // The first and last class, and classes past the first 256 threads.
        for (i, t) in [(0, v - 1), (1, 0), (2, 256.min(v - 1))] {
            targets[i] = t as i32;
        }
        let tshape = &shape[..shape.len() - 1];
        for (dt, name, tol) in DTYPES {
            let x = round(&x, dt);
            let dloss = round(&[1.37], dt);
            let mut re = Reference::new();
            let xv = re.param(shape, &x);
            let tv = re.ids(tshape, &targets);
            let seed = re.input(&[], &dloss);
            let loss = re.g.cross_entropy(xv, tv).unwrap();
            let gr = autodiff::backward_from(&mut re.g, loss, &[xv], seed).unwrap();
            let want = re.eval(&[loss, gr[0]]);
            // Each row's loss, logsumexp − the target's logit, for the workspace.
            let want_rows: Vec<f64> = x
                .chunks(v)
                .zip(&targets)
                .map(|(row, &t)| {
                    let m = row.iter().fold(f64::NEG_INFINITY, |m, &a| m.max(a));
                    m + row.iter().map(|&a| (a - m).exp()).sum::<f64>().ln() - row[t as usize]
                })
                .collect();

            d.write("x", &x);
            d.write_ids("targets", &targets);
            d.write("dloss", &dloss);
            run_cross_entropy(&d, dt, &sh, v);
            check(
                &format!("cross_entropy {sh} ×{scale} {name}"),
                tol,
                &[
                    ("row_loss", &want_rows, &d.read("workspace")),
                    ("loss", &want[0], &d.read("loss")),
                    ("dlogits", &want[1], &d.read("dlogits")),
                ],
            );
        }
    }

    // A target outside the classes: the cpu backend refuses it, the kernel gives
    // a NaN loss for its row, hence for the mean.
    let (r, v) = (4, 300);
    let x = normal(&mut Rng::new(399), r * v, 1.0, 0.0);
    let targets = [3, -1, 300, 299];
    let mut re = Reference::new();
    let xv = re.input(&[r, v], &x);
    let tv = re.ids(&[r], &targets);
    let loss = re.g.cross_entropy(xv, tv).unwrap();
    assert!(
        re.try_eval(&[loss]).is_err(),
        "the cpu backend took bad targets"
    );
    d.write("x", &x);
    d.write_ids("targets", &targets);
    d.write("dloss", &[1.0]);
    run_cross_entropy(&d, DType::F32, &Shape::new(&[r, v]), v);
    let rows = d.read("workspace");
    println!("cross_entropy bad targets: row losses {rows:?}");
    assert!(rows[0].is_finite() && rows[3].is_finite());
    assert!(rows[1].is_nan() && rows[2].is_nan());
    assert!(d.read("loss")[0].is_nan());
}

/// Op::Embedding and Op::EmbeddingBackward (repeated ids add up; unused rows of
/// the table get a zero gradient).
#[test]
fn embedding_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "embedding");
    // (ids shape, vocab, C): the backward's (column, range) grid ends in a part-full block.
    let cases: [(&[usize], usize, usize); 2] = [(&[3, 20], 11, 300), (&[7], 5, 37)];
    for (k, &(ishape, vocab, c)) in cases.iter().enumerate() {
        let n: usize = ishape.iter().product();
        let mut rng = Rng::new(400 + k as u64);
        // The last row of the table is never looked up.
        let mut ids: Vec<i32> = (0..n).map(|_| rng.below(vocab - 1) as i32).collect();
        ids[0] = 0;
        ids[n - 1] = vocab as i32 - 2;
        let table = normal(&mut rng, vocab * c, 1.0, 0.0);
        let dy = normal(&mut rng, n * c, 1.0, 0.0);
        let oshape: Vec<usize> = ishape.iter().copied().chain([c]).collect();
        for (dt, name, tol) in DTYPES {
            let (table, dy) = (round(&table, dt), round(&dy, dt));
            let mut re = Reference::new();
            let iv = re.ids(ishape, &ids);
            let tv = re.param(&[vocab, c], &table);
            let dyv = re.input(&oshape, &dy);
            let out = re.g.embedding(iv, tv).unwrap();
            let gr = re.grads(&[(out, dyv)], &[tv]);
            let want = re.eval(&[out, gr[0]]);

            run_embedding(&d, dt, (ishape, &ids), vocab, &table, &dy);
            check(
                &format!("embedding ids {ishape:?} vocab {vocab} C {c} {name}"),
                tol,
                &[
                    ("out", &want[0], &d.read("out")),
                    ("dtable", &want[1], &d.read("dtable")),
                ],
            );
        }
    }

    // An id outside the table: the cpu backend refuses it, the kernel writes NaN
    // over that row of the output only (and the backward skips it).
    let (vocab, c) = (5, 70);
    let ids = [1, -1, 5, 4];
    let table = normal(&mut Rng::new(499), vocab * c, 1.0, 0.0);
    let mut re = Reference::new();
    let iv = re.ids(&[4], &ids);
    let tv = re.input(&[vocab, c], &table);
    let out = re.g.embedding(iv, tv).unwrap();
    assert!(re.try_eval(&[out]).is_err(), "the cpu backend took bad ids");
    run_embedding(
        &d,
        DType::F32,
        (&[4], &ids),
        vocab,
        &table,
        &vec![1.0; 4 * c],
    );
    let out = d.read("out");
    let nan_rows: Vec<bool> = out
        .chunks(c)
        .map(|r| r.iter().all(|x| x.is_nan()))
        .collect();
    assert_eq!(nan_rows, [false, true, true, false]);
    assert_eq!(out.iter().filter(|x| x.is_nan()).count(), 2 * c);
    let dtable = d.read("dtable");
    let want: Vec<f64> = (0..vocab * c)
        .map(|i| if [1, 4].contains(&(i / c)) { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(dtable, want, "the backward over bad ids");
}

/// The elementwise kernels CudaBackend::run launches for Op::Add, Op::Mul (with
/// a broadcast operand), Op::Scale, Op::Fill, Op::Gelu, Op::GeluBackward,
/// Op::BiasGelu, Op::BiasGeluBackward, Op::Silu and Op::SiluBackward, and
/// Backend::accumulate
/// (tests/cuda_emulated_fused.rs has the vectorised kernels' own cases).
#[test]
fn elementwise_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "elementwise");
    // (a's shape, b's shape): b a trailing part of a, repeating with period nb.
    let cases: [(&[usize], &[usize]); 3] = [
        (&[5, 300], &[300]),
        (&[2, 3, 50], &[3, 50]),
        (&[4, 7], &[4, 7]),
    ];
    for (k, &shapes) in cases.iter().enumerate() {
        for aligned in [true, false] {
            elementwise_case(&d, shapes, 500 + k as u64, aligned);
        }
    }
}

/// Op::Cast between every pair of storage types, bit for bit against the cpu
/// backend's round-to-nearest-even (ties, overflow to inf, subnormals, NaN).
#[test]
fn cast_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "cast");
    let mut rng = Rng::new(600);
    let mut x = normal(&mut rng, 300, 3.0, 0.0);
    let e = f64::EPSILON;
    x.extend([
        1.0 + 2f64.powi(-8),       // a bf16 tie, to even (1)
        1.0 + 3.0 * 2f64.powi(-8), // a bf16 tie, to even (up)
        1.0 + 2f64.powi(-11),      // an f16 tie
        -(1.0 + 3.0 * 2f64.powi(-11)),
        70000.0, // past f16's largest
        -1e-6,   // f16 subnormal
        3e-39,   // f32 subnormal
        0.0,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        1.0 + e,
    ]);
    let n = x.len();
    for (from, fname, _) in DTYPES {
        let xs = round(&x, from);
        for (to, tname, _) in DTYPES {
            let mut re = Reference::new();
            let xv = re.operand(&[n], &xs, from, false);
            let y = re.g.cast(xv, to).unwrap();
            let want = re.eval(&[y]).remove(0);
            d.write("x", &xs);
            let plan = cast::plan_forward(from, &Shape::new(&[n])).unwrap();
            d.replay(
                &plan,
                to,
                &[io("x", Ty::Of(from), n)],
                &[io("out", Ty::T, n)],
            );
            let got = d.read("out");
            let differ = want
                .iter()
                .zip(&got)
                .filter(|(a, b)| !(a == b && a.is_sign_negative() == b.is_sign_negative()))
                .filter(|(a, b)| !(a.is_nan() && b.is_nan()))
                .count();
            println!("cast {fname} → {tname}: {differ} of {n} differ");
            assert_eq!(differ, 0, "cast {fname} → {tname}");
        }
    }
}

/// Op::Sum, Op::Mean and Op::Expand over axis sets of ranks 1 to 6, with the
/// launches the backend plans for them.
#[test]
fn reduce_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "reduce");
    let cases: [(&[usize], &[usize]); 14] = [
        (&[2, 3, 5, 7], &[0]),
        (&[2, 3, 5, 7], &[0, 1]),
        (&[2, 3, 5, 7], &[1]),
        (&[2, 3, 5, 7], &[3]),
        (&[2, 3, 5, 7], &[1, 3]),
        (&[2, 3, 5, 7], &[0, 2, 3]),
        (&[2, 3, 5, 7], &[0, 1, 2, 3]),
        (&[2, 3, 5, 7], &[]),
        (&[4, 70, 9], &[2]),
        (&[4, 70, 9], &[0]),
        (&[2, 1, 3, 2, 5, 3], &[1, 4]),
        (&[2, 1, 3, 2, 5, 3], &[0, 3, 5]),
        (&[300], &[0]),
        // 1000 rows into 7 uneven chunks (column_chunks), for the two stages.
        (&[1000, 3], &[0]),
    ];
    for (k, &(shape, axes)) in cases.iter().enumerate() {
        let full = Shape::new(shape);
        let mut rng = Rng::new(700 + k as u64);
        let x = normal(&mut rng, full.numel(), 1.0, 0.5);
        let reduced: Vec<usize> = (0..shape.len())
            .filter(|i| !axes.contains(i))
            .map(|i| shape[i])
            .collect();
        let y = normal(&mut rng, Shape::new(&reduced).numel(), 1.0, 0.0);
        for (dt, name, tol) in DTYPES {
            let (x, y) = (round(&x, dt), round(&y, dt));
            let mut re = Reference::new();
            let xv = re.input(shape, &x);
            let yv = re.input(&reduced, &y);
            let sum = re.g.sum(xv, axes).unwrap();
            let mean = re.g.mean(xv, axes).unwrap();
            let expand = re.g.expand(yv, axes, full.clone()).unwrap();
            let want = re.eval(&[sum, mean, expand]);

            let (t, nx, ny, mut got) = (Ty::T, full.numel(), y.len(), Vec::new());
            for mean in [Some(false), Some(true), None] {
                let (plan, input, n_in, n_out) = match mean {
                    Some(mean) => (reduce::plan_sum(&full, axes, mean, dt, true), &x, nx, ny),
                    None => (reduce::plan_expand(&full, axes), &y, ny, nx),
                };
                d.write("x", input);
                d.replay(
                    &plan.unwrap(),
                    dt,
                    &[io("x", t, n_in)],
                    &[io("out", t, n_out)],
                );
                got.push(d.read("out"));
            }
            check(
                &format!("reduce {full} axes {axes:?} {name}"),
                tol,
                &[
                    ("sum", &want[0], &got[0]),
                    ("mean", &want[1], &got[1]),
                    ("expand", &want[2], &got[2]),
                ],
            );
        }
    }
}

/// Op::Transpose (with `transpose_view`'s A, mid, B, inner), and Op::Split and
/// Op::Concat (one launch per slice of `slices`).
#[test]
fn shape_kernels_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "shape");
    let transposes: [(&[usize], usize, usize); 7] = [
        (&[2, 3, 4, 5], 1, 3),
        (&[2, 3, 4, 5], 0, 1),
        (&[2, 3, 4, 5], 3, 2),
        (&[2, 3, 4, 5], 0, 3),
        (&[2, 3, 4, 5], 2, 2),
        (&[300, 7], 0, 1),
        (&[3, 70, 2, 5], 1, 2),
    ];
    for (k, &(shape, a, b)) in transposes.iter().enumerate() {
        let sh = Shape::new(shape);
        let x = normal(&mut Rng::new(800 + k as u64), sh.numel(), 1.0, 0.0);
        for (dt, name, _) in DTYPES {
            let x = round(&x, dt);
            let mut re = Reference::new();
            let xv = re.input(shape, &x);
            let t = re.g.transpose(xv, a, b).unwrap();
            let want = re.eval(&[t]);
            d.write("x", &x);
            let n = sh.numel();
            let plan = shape::plan_transpose(&sh, a, b);
            d.replay(&plan, dt, &[io("x", Ty::T, n)], &[io("out", Ty::T, n)]);
            // A copy: exact in every dtype.
            check(
                &format!("transpose {sh} ({a}, {b}) {name}"),
                0.0,
                &[("out", &want[0], &d.read("out"))],
            );
        }
    }

    let splits: [(&[usize], usize, &[usize]); 4] = [
        (&[4, 300], 1, &[100, 7, 193]),
        (&[6, 5, 3], 0, &[1, 5]),
        (&[2, 9, 4], 1, &[3, 3, 3]),
        (&[3, 2, 70], 2, &[64, 6]),
    ];
    for (k, &(shape, axis, sizes)) in splits.iter().enumerate() {
        let whole = Shape::new(shape);
        let part_shapes: Vec<Shape> = sizes
            .iter()
            .map(|&n| {
                let mut p = shape.to_vec();
                p[axis] = n;
                Shape::new(&p)
            })
            .collect();
        let parts: Vec<&Shape> = part_shapes.iter().collect();
        let mut rng = Rng::new(900 + k as u64);
        let x = normal(&mut rng, whole.numel(), 1.0, 0.0);
        let ys: Vec<Vec<f64>> = part_shapes
            .iter()
            .map(|p| normal(&mut rng, p.numel(), 1.0, 0.0))
            .collect();
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("part{i}")).collect();
        let (split, concat) = (
            shape::plan_split(&whole, &parts, axis),
            shape::plan_concat(&whole, &parts, axis),
        );
        for (dt, name, _) in DTYPES {
            let x = round(&x, dt);
            let ys: Vec<Vec<f64>> = ys.iter().map(|y| round(y, dt)).collect();
            let mut re = Reference::new();
            let xv = re.input(shape, &x);
            let yv: Vec<Value> = part_shapes
                .iter()
                .zip(&ys)
                .map(|(p, y)| re.input(p.dims(), y))
                .collect();
            let mut outs = re.g.split(xv, axis, sizes).unwrap();
            outs.push(re.g.concat(&yv, axis).unwrap());
            let want = re.eval(&outs);

            let xs = [io("x", Ty::T, whole.numel())];
            let ps: Vec<Io> = names
                .iter()
                .zip(&parts)
                .map(|(f, p)| io(f, Ty::T, p.numel()))
                .collect();
            d.write("x", &x);
            d.replay(&split, dt, &xs, &ps);
            let mut got: Vec<Vec<f64>> = names.iter().map(|f| d.read(f)).collect();
            for (f, y) in names.iter().zip(&ys) {
                d.write(f, y);
            }
            d.replay(&concat, dt, &ps, &[io("out", Ty::T, whole.numel())]);
            got.push(d.read("out"));

            let labels: Vec<String> = (0..sizes.len())
                .map(|i| format!("split part {i}"))
                .chain([s("concat")])
                .collect();
            let outputs: Vec<(&str, &[f64], &[f64])> = labels
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(l, (w, g))| (l.as_str(), w.as_slice(), g.as_slice()))
                .collect();
            check(
                &format!("split/concat {whole} axis {axis} sizes {sizes:?} {name}"),
                0.0,
                &outputs,
            );
        }
    }
}
