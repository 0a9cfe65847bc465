//! The tiled and vectorised CUDA kernels of issue 15 (column sums, the one-pass
//! LayerNorm) on the CPU emulator (tests/cuda_emu/emu.h), replaying the host's
//! own plans against the cpu backend in f64, as tests/cuda_emulated_ops.rs
//! does for every family. Each case also asserts which kernel the plan picked,
//! so the fast paths and their fallbacks are both exercised: shapes off the
//! vector width, strips and slabs that end part-full, misaligned operands.

// Each test binary that includes the harness uses only some of it.
#[allow(dead_code)]
#[path = "cuda_emu/harness.rs"]
mod harness;
#[path = "cuda_emu/replay.rs"]
mod replay;
#[allow(dead_code)]
#[path = "cuda_emu/support.rs"]
mod support;

use harness::{
    check, elementwise_case, normal, round, run_layernorm, Driver, Reference, DTYPES,
    LAYERNORM_OUTPUTS,
};
use support::compiler;

use replay::{io, Ty};

use headroom::backend::cuda::ops::{layernorm, reduce};
use headroom::backend::cuda::plan::OpPlan;
use headroom::rng::Rng;
use headroom::{DType, Shape};

/// The symbols of a plan's launches for `dt`, in order.
fn kernels(plan: &OpPlan, dt: DType) -> Vec<String> {
    plan.launches
        .iter()
        .map(|l| l.entry.symbol(dt).unwrap())
        .collect()
}

/// Op::Sum and Op::Mean over leading axes (the bias gradient's column sum)
/// through the tiled column kernels, and the reductions that fall back.
#[test]
fn column_sums_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "reduce");
    // (shape, axes, aligned, the first kernel's stem for f32 and for bf16/f16).
    // 600 rows: 10 slabs of 60 (not a multiple of the 8 row lanes); 520
    // columns: 3 bf16 strips of 256, the last with 8; 40 columns: one strip,
    // most column lanes idle; 37 and 3 columns: off every vector width.
    type Case<'a> = (&'a [usize], &'a [usize], bool, &'a str, &'a str);
    let (vec, one) = ("colsum_partial_vec", "colsum_partial");
    let cases: [Case; 9] = [
        (&[600, 256], &[0], true, vec, vec),
        (&[600, 256], &[0], false, one, one),
        (&[3, 200, 40], &[0, 1], true, vec, vec),
        (&[70, 520], &[0], true, vec, vec),
        (&[70, 4, 5], &[0], true, vec, one),
        (&[130, 37], &[0], true, one, one),
        (&[1000, 3], &[0], true, one, one),
        (&[50, 60], &[0, 1], true, one, one),
        // Not leading axes: the general kernels.
        (&[60, 50], &[1], true, "sum_partial", "sum_partial"),
    ];
    let mut worst = [0f64; 3];
    for (k, &(shape, axes, aligned, stem32, stem16)) in cases.iter().enumerate() {
        let full = Shape::new(shape);
        let n_out: usize = (0..shape.len())
            .filter(|i| !axes.contains(i))
            .map(|i| shape[i])
            .product();
        let mut rng = Rng::new(900 + k as u64);
        let x = normal(&mut rng, full.numel(), 1.0, 0.5);
        for (j, (dt, name, tol)) in DTYPES.into_iter().enumerate() {
            let x = round(&x, dt);
            let mut re = Reference::new();
            let xv = re.input(shape, &x);
            let sum = re.g.sum(xv, axes).unwrap();
            let mean = re.g.mean(xv, axes).unwrap();
            let want = re.eval(&[sum, mean]);
            d.write("x", &x);
            let mut got = Vec::new();
            for mean in [false, true] {
                let plan = reduce::plan_sum(&full, axes, mean, dt, aligned).unwrap();
                let stem = if dt == DType::F32 { stem32 } else { stem16 };
                assert_eq!(
                    kernels(&plan, dt)[0],
                    format!("{stem}_{name}"),
                    "{full} {axes:?}"
                );
                let (xs, out) = (io("x", Ty::T, full.numel()), io("out", Ty::T, n_out));
                d.replay(&plan, dt, &[xs], &[out]);
                got.push(d.read("out"));
            }
            let case = format!("column sum {full} axes {axes:?} aligned {aligned} {name}");
            check(
                &case,
                tol,
                &[("sum", &want[0], &got[0]), ("mean", &want[1], &got[1])],
            );
            for (w, g) in want.iter().zip(&got) {
                worst[j] = worst[j].max(harness::rel_err(w, g));
            }
        }
    }
    for (j, (_, name, _)) in DTYPES.iter().enumerate() {
        println!("column sums, worst {name}: {:.2e}", worst[j]);
    }
}

/// A column sum too big for 32-bit indices falls back to the general kernels,
/// whose own indices go 64-bit; one of fewer elements takes the tiles.
#[test]
fn column_sums_past_32_bits_take_the_general_kernels() {
    let big = Shape::new(&[1 << 17, 1 << 15]);
    let plan = reduce::plan_sum(&big, &[0], false, DType::BF16, true).unwrap();
    assert_eq!(kernels(&plan, DType::BF16)[0], "sum_partial_bf16");
    let gpt2 = Shape::new(&[16, 1024, 768]);
    let plan = reduce::plan_sum(&gpt2, &[0, 1], false, DType::BF16, true).unwrap();
    assert_eq!(
        kernels(&plan, DType::BF16),
        ["colsum_partial_vec_bf16", "colsum_finish_bf16"]
    );
    let ws = plan.workspace_bytes.unwrap();
    assert!(ws <= reduce::PARTIALS_CAP, "{ws} bytes of partials");
}

/// Op::LayerNorm and Op::LayerNormBackward through the row groups (one pass,
/// vectorised or not) and the block-per-row fallback past 8192 columns: y, the
/// saved mean and rstd, and dx, dw, db fed the forward's mean and rstd.
#[test]
fn layernorm_row_groups_match_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "layernorm");
    let eps = 1e-5;
    // (shape, aligned, the backward's first kernel for f32 and for bf16/f16).
    // 768: GPT-2's, 96 threads a row (3 warps), 10 row groups a backward block.
    // 64 and 40: one warp a row; 300 and 600 rows: several backward blocks,
    // the last part-full. 37: off every vector width; 300: off bf16's only;
    // 1100: 160 threads a row, f32 two vectors a thread; 4104: the backward
    // adds its groups' dw, db in three chunks of columns; 8200: the fallback.
    type Case<'a> = (&'a [usize], bool, &'a str, &'a str);
    let (vec, one) = ("layernorm_backward_rows_vec", "layernorm_backward_rows");
    let wide = "layernorm_backward_dx";
    let cases: [Case; 9] = [
        (&[5, 768], true, vec, vec),
        (&[300, 64], true, vec, vec),
        (&[600, 40], true, vec, vec),
        (&[4, 10, 37], true, one, one),
        (&[7, 300], true, vec, one),
        (&[7, 300], false, one, one),
        (&[3, 1100], true, vec, one),
        (&[5, 4104], true, vec, vec),
        (&[2, 8200], true, wide, wide),
    ];
    let mut worst = [0f64; 3];
    for (k, &(shape, aligned, stem32, stem16)) in cases.iter().enumerate() {
        let sh = Shape::new(shape);
        for (j, (dt, name, tol)) in DTYPES.into_iter().enumerate() {
            let forward = layernorm::plan_forward(&sh, eps, dt, aligned);
            let backward = layernorm::plan_backward(&sh, dt, aligned);
            let stem = if dt == DType::F32 { stem32 } else { stem16 };
            let fwd_stem = stem
                .replace("backward_rows", "forward_rows")
                .replace("backward_dx", "forward");
            assert_eq!(
                kernels(&forward, dt),
                [format!("{fwd_stem}_{name}")],
                "{sh}"
            );
            assert_eq!(kernels(&backward, dt)[0], format!("{stem}_{name}"), "{sh}");
            let plans = (&forward, &backward);
            let (want, got) = run_layernorm(&d, &sh, 1000 + k as u64, dt, plans);
            let outputs: Vec<(&str, &[f64], &[f64])> = LAYERNORM_OUTPUTS
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(&f, (w, g))| (f, w.as_slice(), g.as_slice()))
                .collect();
            check(
                &format!("layernorm {sh} aligned {aligned} {name}"),
                tol,
                &outputs,
            );
            for (_, w, g) in &outputs {
                worst[j] = worst[j].max(harness::rel_err(w, g));
            }
        }
    }
    for (j, (_, name, _)) in DTYPES.iter().enumerate() {
        println!("layernorm row groups, worst {name}: {:.2e}", worst[j]);
    }
}

/// GPT-2's LayerNorm plans: two launches for the backward, partials under the
/// cap.
#[test]
fn layernorm_plans_for_gpt2() {
    let x = Shape::new(&[16, 1024, 768]);
    let f = layernorm::plan_forward(&x, 1e-5, DType::BF16, true);
    assert_eq!(
        kernels(&f, DType::BF16),
        ["layernorm_forward_rows_vec_bf16"]
    );
    let b = layernorm::plan_backward(&x, DType::BF16, true);
    assert_eq!(
        kernels(&b, DType::BF16),
        [
            "layernorm_backward_rows_vec_bf16",
            "layernorm_backward_dwdb_finish_bf16"
        ]
    );
    assert!(b.workspace_bytes.unwrap() <= reduce::PARTIALS_CAP);
}

/// The elementwise ops through the vectorised kernels (16 bytes a thread, a
/// scalar tail) on lengths on and off the vector widths, with periods that are
/// multiples of them, are not, or are shorter than one vector; and the plain
/// kernels when an operand is misaligned.
#[test]
fn vectorised_elementwise_matches_cpu() {
    let Some(cxx) = compiler() else { return };
    let d = Driver::build(&cxx, "elementwise");
    type Case = (&'static [usize], &'static [usize]);
    let cases: [Case; 6] = [
        (&[4, 64], &[64]),   // b a multiple of 8: b in 16-byte loads
        (&[5, 300], &[300]), // n = 1500: bf16/f16 end in a 4-element tail
        (&[3, 37], &[37]),   // every vector wraps b at a different place
        (&[3, 3], &[3]),     // b shorter than a vector
        (&[7], &[7]),        // shorter than one bf16 vector: all tail
        (&[2, 3, 40], &[3, 40]),
    ];
    let mut worst = [0f64; 3];
    for (k, &shapes) in cases.iter().enumerate() {
        for aligned in [true, false] {
            let res = elementwise_case(&d, shapes, 1100 + k as u64, aligned);
            for (j, (err, launched)) in res.into_iter().enumerate() {
                worst[j] = worst[j].max(err);
                let vec = launched.iter().filter(|s| s.contains("_vec_")).count();
                assert_eq!(
                    vec,
                    if aligned { launched.len() } else { 0 },
                    "{launched:?}"
                );
            }
        }
    }
    for (j, (_, name, _)) in DTYPES.iter().enumerate() {
        println!("elementwise, worst {name}: {:.2e}", worst[j]);
    }
}
