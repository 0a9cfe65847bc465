//! The cross-entropy kernels of a padded vocabulary and of a training step
//! (kernels/cross_entropy.cu) on the CPU emulator, against the cpu backend in
//! f64: Op::CrossEntropy and its backward over the first `classes` logits of a
//! row, and Op::CrossEntropyFused, the loss and dlogits in one pass, written
//! beside the logits and over them (as when the executor donates their
//! memory). Rows short enough for the registers and one longer (the second
//! read), padded and not. Needs a C++20 compiler, as tests/cuda_emulated_ops.rs.

#[allow(dead_code)]
#[path = "cuda_emu/harness.rs"]
mod harness;
#[path = "cuda_emu/replay.rs"]
mod replay;
#[path = "cuda_emu/support.rs"]
mod support;

use harness::{check, normal, round, run_cross_entropy, Driver, Reference, DTYPES};
use replay::{io, updated, Ty};
use support::compiler;

use headroom::backend::cuda::ops::cross_entropy::{self, FUSED_CACHED_CLASSES};
use headroom::graph::autodiff;
use headroom::rng::Rng;
use headroom::{DType, Shape};

/// Op::CrossEntropyFused replayed as the backend plans it, on the files x
/// [logits], targets and dloss: the results are the files loss, workspace
/// (each row's loss) and dlogits — or, `in_place`, x itself, dlogits written
/// over the logits as when the executor donates their memory.
pub fn run_cross_entropy_fused(
    d: &Driver,
    dt: DType,
    logits: &Shape,
    classes: usize,
    in_place: bool,
) {
    let (r, v) = (logits.rows(), logits.last());
    let (xs, ts) = (io("x", Ty::T, r * v), io("targets", Ty::I32, r));
    let ins = [xs, ts, io("dloss", Ty::F32, 1)];
    let dlogits = if in_place {
        updated("x", Ty::T, r * v)
    } else {
        io("dlogits", Ty::T, r * v)
    };
    let plan = cross_entropy::plan_fused(logits, classes);
    d.replay(&plan, dt, &ins, &[io("loss", Ty::F32, 1), dlogits]);
}

/// Logits and targets of one case, the cpu backend's loss and dlogits for them
/// (f64, inputs rounded to `dt`), and each row's loss.
struct Want {
    x: Vec<f64>,
    targets: Vec<i32>,
    dloss: Vec<f64>,
    loss: Vec<f64>,
    dlogits: Vec<f64>,
    rows: Vec<f64>,
}

fn want(sh: &Shape, classes: usize, x: &[f64], targets: &[i32], dt: DType) -> Want {
    let v = sh.last();
    let x = round(x, dt);
    let dloss = round(&[1.37], dt);
    let mut re = Reference::new();
    let xv = re.param(sh.dims(), &x);
    let tv = re.ids(&sh.dims()[..sh.rank() - 1], targets);
    let seed = re.input(&[], &dloss);
    let loss = re.g.cross_entropy_classes(xv, tv, classes).unwrap();
    let gr = autodiff::backward_from(&mut re.g, loss, &[xv], seed).unwrap();
    let w = re.eval(&[loss, gr[0]]);
    let rows = x
        .chunks(v)
        .zip(targets)
        .map(|(row, &t)| {
            let row = &row[..classes];
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &a| m.max(a));
            m + row.iter().map(|&a| (a - m).exp()).sum::<f64>().ln() - row[t as usize]
        })
        .collect();
    Want {
        x,
        targets: targets.to_vec(),
        dloss,
        loss: w[0].clone(),
        dlogits: w[1].clone(),
        rows,
    }
}

/// The gradient of every padding column is exactly 0.
fn assert_padding_zero(case: &str, d: &[f64], v: usize, classes: usize) {
    for (i, &g) in d.iter().enumerate() {
        assert!(
            i % v < classes || g == 0.0,
            "{case}: padding logit {i} has gradient {g}"
        );
    }
}

/// (shape, classes, logit scale): padded and not, rows that wrap the 256
/// threads, a row of 300 classes padded to 384, and one past what the fused
/// kernel holds in registers (padded too).
fn cases() -> Vec<(Vec<usize>, usize, f64)> {
    vec![
        (vec![5, 300], 300, 1.0),
        (vec![3, 384], 300, 4.0),
        (vec![257, 11], 7, 2.0),
        (vec![2, 3, 128], 97, 40.0),
        (
            vec![2, FUSED_CACHED_CLASSES + 200],
            FUSED_CACHED_CLASSES + 77,
            3.0,
        ),
    ]
}

#[test]
fn padded_and_fused_cross_entropy_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "cross_entropy");
    let mut worst = [0f64; 3];
    for (k, (shape, classes, scale)) in cases().into_iter().enumerate() {
        let sh = Shape::new(&shape);
        let (r, v) = (sh.rows(), sh.last());
        let mut rng = Rng::new(500 + k as u64);
        let x = normal(&mut rng, r * v, scale, 0.0);
        let mut targets: Vec<i32> = (0..r).map(|_| rng.below(classes) as i32).collect();
        // The first and last class, and a class past the first 256 threads.
        targets[0] = classes as i32 - 1;
        targets[r - 1] = 0;
        if r > 2 {
            targets[1] = 256.min(classes - 1) as i32;
        }
        for (di, (dt, name, tol)) in DTYPES.into_iter().enumerate() {
            let w = want(&sh, classes, &x, &targets, dt);
            let case = format!("{sh} classes {classes} ×{scale} {name}");
            let write = || {
                d.write("x", &w.x);
                d.write_ids("targets", &w.targets);
                d.write("dloss", &w.dloss);
            };
            // The long row is the fused kernel's second path; the separate
            // kernels' loops do not change with the length.
            if v < FUSED_CACHED_CLASSES {
                write();
                run_cross_entropy(&d, dt, &sh, classes);
                let got = d.read("dlogits");
                check(
                    &format!("cross_entropy {case}"),
                    tol,
                    &[
                        ("row_loss", &w.rows, &d.read("workspace")),
                        ("loss", &w.loss, &d.read("loss")),
                        ("dlogits", &w.dlogits, &got),
                    ],
                );
                assert_padding_zero(&case, &got, v, classes);
            }
            for in_place in [false, true] {
                write();
                run_cross_entropy_fused(&d, dt, &sh, classes, in_place);
                let got = d.read(if in_place { "x" } else { "dlogits" });
                let loss = d.read("loss");
                check(
                    &format!("cross_entropy_fused {case} in place {in_place}"),
                    tol,
                    &[
                        ("row_loss", &w.rows, &d.read("workspace")),
                        ("loss", &w.loss, &loss),
                        ("dlogits", &w.dlogits, &got),
                    ],
                );
                assert_padding_zero(&case, &got, v, classes);
                let e = harness::rel_err(&w.dlogits, &got).max(harness::rel_err(&w.loss, &loss));
                worst[di] = worst[di].max(e);
            }
        }
    }
    for ((_, name, _), e) in DTYPES.iter().zip(worst) {
        println!("cross_entropy_fused worst error {name}: {e:.2e}");
    }

    // A target outside the classes (past them, into the padding, or negative)
    // gives its row a NaN loss, hence the mean; the other rows are unharmed.
    let (r, v, classes) = (4, 300, 200);
    let x = normal(&mut Rng::new(599), r * v, 1.0, 0.0);
    d.write("x", &x);
    d.write_ids("targets", &[3, -1, 250, 199]);
    d.write("dloss", &[1.0]);
    run_cross_entropy_fused(&d, DType::F32, &Shape::new(&[r, v]), classes, true);
    let rows = d.read("workspace");
    println!("cross_entropy_fused bad targets: row losses {rows:?}");
    assert!(rows[0].is_finite() && rows[3].is_finite());
    assert!(rows[1].is_nan() && rows[2].is_nan());
    assert!(d.read("loss")[0].is_nan());
}
