//! The mixed-dtype kernels autocast records (f32 LayerNorm and RMSNorm
//! operands with an f16/bf16 output and their backwards; the residual add of an f16/bf16
//! projection to the f32 stream) on the CPU emulator (tests/cuda_emu/emu.h),
//! replaying the host's own plans against the cpu backend in f64. Each case
//! asserts which kernel the plan picked, so the vectorised row groups, the
//! scalar ones, the wide rows and the misaligned fallbacks are all exercised.

// Each test binary that includes the harness uses only some of it.
#[allow(dead_code)]
#[path = "cuda_emu/harness.rs"]
mod harness;
#[path = "cuda_emu/replay.rs"]
mod replay;
#[allow(dead_code)]
#[path = "cuda_emu/support.rs"]
mod support;

use harness::{check, normal, rel_err, round, run_rmsnorm, Driver, Reference, RMSNORM_OUTPUTS};
use support::compiler;

use replay::{io, Ty};

use headroom::backend::cuda::ops::elementwise as ew;
use headroom::backend::cuda::ops::{layernorm, rmsnorm};
use headroom::backend::cuda::plan::OpPlan;
use headroom::graph::Op;
use headroom::rng::Rng;
use headroom::{DType, Shape};

/// The low dtypes, their kernel suffix and the tolerance of what is stored in
/// them (the f32 outputs are held to [`F32_TOL`]).
const LOW: [(DType, &str, f64); 2] = [(DType::BF16, "bf16", 2e-2), (DType::F16, "f16", 5e-3)];

/// The f32 outputs are computed in f32 from exactly the operands given.
const F32_TOL: f64 = 1e-4;

fn kernels(plan: &OpPlan, dt: DType) -> Vec<String> {
    plan.launches
        .iter()
        .map(|l| l.entry.symbol(dt).unwrap())
        .collect()
}

/// LayerNorm with f32 x, w, b and an f16/bf16 y; its backward with that dtype's
/// dy and f32 dx, dw, db. (shape, aligned, forward stem, backward stem).
#[test]
fn mixed_layernorm_matches_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "layernorm");
    let eps = 1e-5;
    type Case = (&'static [usize], bool, &'static str, &'static str);
    let cases: [Case; 6] = [
        // C a multiple of f32's 4: 16-byte f32 loads, 8-byte low ones.
        (
            &[5, 768],
            true,
            "layernorm_forward_rows_vec",
            "layernorm_backward_rows_vec",
        ),
        (
            &[600, 40],
            true,
            "layernorm_forward_rows_vec",
            "layernorm_backward_rows_vec",
        ),
        (
            &[4, 10, 37],
            true,
            "layernorm_forward_rows",
            "layernorm_backward_rows",
        ),
        (
            &[7, 300],
            false,
            "layernorm_forward_rows",
            "layernorm_backward_rows",
        ),
        (
            &[3, 1100],
            true,
            "layernorm_forward_rows_vec",
            "layernorm_backward_rows_vec",
        ),
        (
            &[2, 8200],
            true,
            "layernorm_forward",
            "layernorm_backward_dx",
        ),
    ];
    let mut worst = [(0f64, 0f64); 2];
    for (k, &(shape, aligned, fwd, bwd)) in cases.iter().enumerate() {
        let sh = Shape::new(shape);
        let (r, c) = (sh.rows(), sh.last());
        let mut rng = Rng::new(2000 + k as u64);
        let x = round(&normal(&mut rng, r * c, 2.0, 0.7), DType::F32);
        let w = round(&normal(&mut rng, c, 0.5, 1.0), DType::F32);
        let b = round(&normal(&mut rng, c, 0.2, 0.0), DType::F32);
        let dy = normal(&mut rng, r * c, 1.0, 0.0);
        for (j, (dt, name, tol)) in LOW.into_iter().enumerate() {
            let dy = round(&dy, dt);
            let mut re = Reference::new();
            let (xv, wv, bv) = (re.param(shape, &x), re.param(&[c], &w), re.param(&[c], &b));
            let dyv = re.input(shape, &dy);
            let op = Op::LayerNorm { eps, out: None };
            let o = re.g.apply(op, &[xv, wv, bv]).unwrap();
            let gr = re.grads(&[(o[0], dyv)], &[xv, wv, bv]);
            let want = re.eval(&[o[0], o[1], o[2], gr[0], gr[1], gr[2]]);

            for (f, v) in [("x", &x), ("w", &w), ("b", &b), ("dy", &dy)] {
                d.write(f, v);
            }
            let (f, mean, rstd) = (Ty::F32, io("mean", Ty::F32, r), io("rstd", Ty::F32, r));
            let (xs, ws, bs) = (io("x", f, r * c), io("w", f, c), io("b", f, c));
            let forward = layernorm::plan_for(&sh, eps, (DType::F32, dt), dt, aligned);
            let backward = layernorm::plan_backward_for(&sh, (dt, DType::F32), dt, aligned);
            assert_eq!(
                kernels(&forward, dt),
                [format!("{fwd}_mixed_{name}")],
                "{sh}"
            );
            assert_eq!(
                kernels(&backward, dt)[0],
                format!("{bwd}_mixed_{name}"),
                "{sh}"
            );
            let finish = kernels(&backward, dt).last().cloned().unwrap();
            assert_eq!(
                finish,
                format!("layernorm_backward_dwdb_finish_mixed_{name}")
            );
            d.replay(
                &forward,
                dt,
                &[xs, ws, bs],
                &[io("y", Ty::T, r * c), mean, rstd],
            );
            let ins = [io("dy", Ty::T, r * c), xs, ws, mean, rstd];
            let outs = [io("dx", f, r * c), io("dw", f, c), io("db", f, c)];
            d.replay(&backward, dt, &ins, &outs);
            let names = ["y", "mean", "rstd", "dx", "dw", "db"];
            let got: Vec<Vec<f64>> = names.iter().map(|f| d.read(f)).collect();
            let case = format!("mixed layernorm {sh} aligned {aligned} {name}");
            let outputs: Vec<(&str, &[f64], &[f64])> = names
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(&f, (w, g))| (f, w.as_slice(), g.as_slice()))
                .collect();
            check(&case, tol, &outputs[..1]);
            check(&case, F32_TOL, &outputs[1..]);
            worst[j].0 = worst[j].0.max(rel_err(&want[0], &got[0]));
            for (_, w, g) in &outputs[1..] {
                worst[j].1 = worst[j].1.max(rel_err(w, g));
            }
        }
    }
    for (j, (_, name, _)) in LOW.iter().enumerate() {
        let (y, rest) = worst[j];
        println!(
            "mixed layernorm, worst {name} y: {y:.2e}; f32 mean, rstd, dx, dw, db: {rest:.2e}"
        );
    }
}

/// RMSNorm with f32 x, w and an f16/bf16 y; its backward with that dtype's dy
/// and f32 dx, dw. (shape, aligned, forward stem, backward stem).
#[test]
fn mixed_rmsnorm_matches_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "rmsnorm");
    let eps = 1e-5;
    type Case = (&'static [usize], bool, &'static str, &'static str);
    let (fvec, bvec) = ("rmsnorm_forward_rows_vec", "rmsnorm_backward_rows_vec");
    let (fone, bone) = ("rmsnorm_forward_rows", "rmsnorm_backward_rows");
    let cases: [Case; 5] = [
        // C a multiple of f32's 4: 16-byte f32 loads, 8-byte low ones.
        (&[5, 768], true, fvec, bvec),
        (&[600, 40], true, fvec, bvec),
        (&[4, 10, 37], true, fone, bone),
        (&[7, 300], false, fone, bone),
        (&[2, 8200], true, "rmsnorm_forward", "rmsnorm_backward_dx"),
    ];
    let mut worst = [(0f64, 0f64); 2];
    for (k, &(shape, aligned, fwd, bwd)) in cases.iter().enumerate() {
        let sh = Shape::new(shape);
        for (j, (dt, name, tol)) in LOW.into_iter().enumerate() {
            let forward = rmsnorm::plan_for(&sh, eps, (DType::F32, dt), dt, aligned);
            let backward = rmsnorm::plan_backward_for(&sh, (dt, DType::F32), dt, aligned);
            assert_eq!(
                kernels(&forward, dt),
                [format!("{fwd}_mixed_{name}")],
                "{sh}"
            );
            let launched = kernels(&backward, dt);
            assert_eq!(launched[0], format!("{bwd}_mixed_{name}"), "{sh}");
            let finish = format!("rmsnorm_backward_dw_finish_mixed_{name}");
            assert_eq!(launched.last(), Some(&finish), "{sh}");
            let types = (DType::F32, dt, dt);
            let (want, got) = run_rmsnorm(&d, &sh, 2200 + k as u64, types, (&forward, &backward));
            let case = format!("mixed rmsnorm {sh} aligned {aligned} {name}");
            let outputs: Vec<(&str, &[f64], &[f64])> = RMSNORM_OUTPUTS
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(&f, (w, g))| (f, w.as_slice(), g.as_slice()))
                .collect();
            check(&case, tol, &outputs[..1]);
            check(&case, F32_TOL, &outputs[1..]);
            worst[j].0 = worst[j].0.max(rel_err(&want[0], &got[0]));
            for (_, w, g) in &outputs[1..] {
                worst[j].1 = worst[j].1.max(rel_err(w, g));
            }
        }
    }
    for (j, (_, name, _)) in LOW.iter().enumerate() {
        let (y, rest) = worst[j];
        println!("mixed rmsnorm, worst {name} y: {y:.2e}; f32 rstd, dx, dw: {rest:.2e}");
    }
}

/// The residual add: f32 a [shape.0] + f16/bf16 b [shape.1] (repeating over
/// a) → f32, through the vectorised kernel (a scalar tail; b in 8-byte loads
/// where its 4 elements are contiguous) and the plain one when misaligned.
#[test]
fn mixed_add_matches_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "elementwise");
    type Case = (&'static [usize], &'static [usize]);
    let cases: [Case; 5] = [
        (&[4, 64], &[4, 64]), // the residual: one shape
        (&[5, 300], &[300]),  // b in 8-byte loads
        (&[3, 37], &[37]),    // vectors wrap b at different places
        (&[3, 3], &[3]),      // b shorter than a vector
        (&[7], &[7]),         // a vector and a tail of 3
    ];
    let mut worst = [0f64; 2];
    for (k, &(ashape, bshape)) in cases.iter().enumerate() {
        let (sa, sb) = (Shape::new(ashape), Shape::new(bshape));
        let (n, nb) = (sa.numel(), sb.numel());
        let mut rng = Rng::new(2100 + k as u64);
        let a = round(&normal(&mut rng, n, 2.0, 0.0), DType::F32);
        let b = normal(&mut rng, nb, 0.5, 0.0);
        for (j, (dt, name, _)) in LOW.into_iter().enumerate() {
            let b = round(&b, dt);
            let mut re = Reference::new();
            let (av, bv) = (re.input(ashape, &a), re.input(bshape, &b));
            let sum = re.g.add(av, bv).unwrap();
            let want = re.eval(&[sum]);
            d.write("a", &a);
            d.write("b", &b);
            for aligned in [true, false] {
                let fit = ew::Fit { dtype: dt, aligned };
                let plan = ew::plan_add_for(&sa, &sb, (DType::F32, dt), fit);
                let stem = if aligned {
                    "add_mixed_vec"
                } else {
                    "add_mixed"
                };
                assert_eq!(kernels(&plan, dt), [format!("{stem}_{name}")]);
                let ins = [io("a", Ty::F32, n), io("b", Ty::T, nb)];
                d.replay(&plan, dt, &ins, &[io("out", Ty::F32, n)]);
                let got = d.read("out");
                let case = format!("mixed add {sa} + {sb} aligned {aligned} {name}");
                check(&case, F32_TOL, &[("out", &want[0], &got)]);
                worst[j] = worst[j].max(rel_err(&want[0], &got));
            }
        }
    }
    for (j, (_, name, _)) in LOW.iter().enumerate() {
        println!("mixed add, worst with {name} b (f32 out): {:.2e}", worst[j]);
    }
}

/// GPT-2's mixed LayerNorm plans: the vectorised row groups, two launches for
/// the backward (as the one-dtype plans).
#[test]
fn mixed_layernorm_plans_for_gpt2() {
    let x = Shape::new(&[16, 1024, 768]);
    let dt = DType::BF16;
    let f = layernorm::plan_for(&x, 1e-5, (DType::F32, dt), dt, true);
    assert_eq!(kernels(&f, dt), ["layernorm_forward_rows_vec_mixed_bf16"]);
    let b = layernorm::plan_backward_for(&x, (dt, DType::F32), dt, true);
    assert_eq!(
        kernels(&b, dt),
        [
            "layernorm_backward_rows_vec_mixed_bf16",
            "layernorm_backward_dwdb_finish_mixed_bf16"
        ]
    );
    assert_eq!(b, layernorm::plan_backward_mixed(&x, true));
}
