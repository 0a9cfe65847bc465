//! Every op case of tests/common/ops.rs, its gradient against central finite
//! differences, all in f64 on the cpu backend; then the same gradients in bf16
//! and f16. The loss is Σ op(x) ⊙ r for a fixed random r, so every output
//! element matters. One test per op family, and one for a whole tiny GPT.

use headroom::graph::{autodiff, Graph, Value};
use headroom::nn::Model;
use headroom::rng::Rng;
use headroom::schedule::{lower, Program};
use headroom::{DType, Device, Gpt, GptConfig, HostTensor, Shape};

mod common;
use common::ops;
use common::ops::case::{ids, Arg, Build, OpCase};
use common::ops::harness::{draw, record, run_program, weighted_loss, Input};

/// A case recorded in one dtype: its graph, operands, loss weights, loss,
/// and each float operand's gradient (with the operand's index).
struct Built {
    g: Graph,
    vals: Vec<Value>,
    weights: Vec<(Value, Vec<f64>)>,
    loss: Value,
    grads: Vec<(usize, Value)>,
}

fn build(args: &[Arg], dt: DType, rng: &mut Rng, build: &Build, autocast: Option<DType>) -> Built {
    let mut g = Graph::new();
    let (vals, wrt) = record(&mut g, args, dt);
    g.set_autocast(autocast);
    let outs = build(&mut g, &vals).unwrap();
    g.set_autocast(None);
    let (loss, weights) = weighted_loss(&mut g, &outs, rng);
    let params: Vec<Value> = wrt.iter().map(|w| w.1).collect();
    let grads = autodiff::backward(&mut g, loss, &params).unwrap();
    Built {
        g,
        vals,
        weights,
        loss,
        grads: wrt.iter().map(|w| w.0).zip(grads).collect(),
    }
}

/// Runs `prog` of `b` with operand values `inputs` (stored in their graph
/// dtype) and returns every output as f64.
fn run(dev: &mut Device, b: &Built, inputs: &[Input], prog: &Program) -> Vec<Vec<f64>> {
    let mut ts: Vec<(Value, HostTensor)> = b
        .vals
        .iter()
        .zip(inputs)
        .map(|(&v, x)| (v, x.tensor(&b.g, v)))
        .collect();
    for (r, x) in &b.weights {
        ts.push((*r, Input::F(x.clone()).tensor(&b.g, *r)));
    }
    run_program(dev, &b.g, prog, &ts)
}

fn train_program(b: &Built) -> Program {
    let mut outputs = vec![b.loss];
    outputs.extend(b.grads.iter().map(|g| g.1));
    lower(&b.g, &outputs).unwrap()
}

/// Builds the case in f64, differentiates Σ out ⊙ r, and compares each
/// gradient element (up to 48 per operand) with central differences of step
/// `case.step`; then, at the pure-f64 tolerance, checks the same gradients
/// computed in bf16 and f16 against the f64 ones.
fn check(case: &OpCase) {
    let name = &case.name;
    let (h, tol) = (case.step, case.tol);
    let mut rng = Rng::new(case.seed);
    let inputs = draw(&case.args, &mut rng, 0.5);
    let mut wrng = rng.clone();
    let built = build(&case.args, DType::F64, &mut rng, &case.build, None);
    let train = train_program(&built);
    let fwd = lower(&built.g, &[built.loss]).unwrap();
    let mut dev = Device::cpu();
    let analytic = run(&mut dev, &built, &inputs, &train);
    let max_elems = 48;
    for (gi, &(arg, _)) in built.grads.iter().enumerate() {
        let mut floats = inputs.clone();
        let n = floats[arg].floats_mut().unwrap().len();
        let step = n.div_ceil(max_elems).max(1);
        for e in (0..n).step_by(step) {
            let mut probe = |delta: f64| {
                let x0 = floats[arg].floats_mut().unwrap()[e];
                floats[arg].floats_mut().unwrap()[e] = x0 + delta;
                let loss = run(&mut dev, &built, &floats, &fwd)[0][0];
                floats[arg].floats_mut().unwrap()[e] = x0;
                loss
            };
            let numeric = (probe(h) - probe(-h)) / (2.0 * h);
            let a = analytic[1 + gi][e];
            let err = (a - numeric).abs() / 1f64.max(a.abs()).max(numeric.abs());
            assert!(
                err <= tol,
                "{name}: d/dx{arg}[{e}] analytic {a} vs numeric {numeric} (rel err {err:e})"
            );
        }
    }
    assert_eq!(
        dev.memory_stats().allocated_bytes,
        0,
        "{name}: leaked device memory"
    );
    if tol <= 1e-6 {
        check_low_precision(case, &inputs, &mut wrng);
    }
}

/// Expected error of a low-precision gradient, relative to the largest f64
/// gradient element. One op: a few units of the dtype's rounding (2⁻⁸ = 3.9e-3
/// for bf16, 2⁻¹¹ = 4.9e-4 for f16). A whole model under autocast: the
/// roundings of every layer compound.
fn lowp_tolerance(dt: DType, model: bool) -> f64 {
    match (dt, model) {
        (DType::BF16, false) => 1e-2,
        (_, false) => 1.5e-3,
        (DType::BF16, true) => 0.1,
        (_, true) => 2e-2,
    }
}

/// The same case in bf16 and f16 (computed in f32, rounded on every store as a
/// GPU would), against f64 gradients of the same inputs. A single op runs with
/// its operands stored in the low dtype; a model (named parameters) runs as
/// training does: f32 master weights under autocast.
fn check_low_precision(case: &OpCase, inputs: &[Input], wrng: &mut Rng) {
    let (name, args) = (&case.name, &case.args);
    let model = args.iter().any(|a| matches!(a, Arg::Named(..)));
    for dt in [DType::BF16, DType::F16] {
        let mut rounded = inputs.to_vec();
        for x in rounded.iter_mut().filter_map(Input::floats_mut) {
            if !model {
                *x = HostTensor::from_f64_as([x.len()], x, dt)
                    .unwrap()
                    .to_f64_vec();
            }
        }
        let mut r1 = wrng.clone();
        let mut r2 = wrng.clone();
        let mut reference = build(args, DType::F64, &mut r1, &case.build, None);
        let mut low = if model {
            build(args, DType::F32, &mut r2, &case.build, Some(dt))
        } else {
            build(args, dt, &mut r2, &case.build, None)
        };
        // Both see the same random weights, rounded to the low dtype.
        for (a, b) in reference.weights.iter_mut().zip(low.weights.iter_mut()) {
            let q = HostTensor::from_f64_as([a.1.len()], &a.1, dt)
                .unwrap()
                .to_f64_vec();
            a.1 = q.clone();
            b.1 = q;
        }
        let mut dev = Device::cpu();
        let want = run(&mut dev, &reference, &rounded, &train_program(&reference));
        let got = run(&mut dev, &low, &rounded, &train_program(&low));
        for gi in 0..reference.grads.len() {
            let (w, g) = (&want[1 + gi], &got[1 + gi]);
            let scale = w.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-3);
            let err = w.iter().zip(g).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
            if std::env::var("HEADROOM_PRINT_LOWP").is_ok() {
                println!("lowp {name} {dt} grad {gi}: rel err {err:.2e}");
            }
            let tol = lowp_tolerance(dt, model);
            assert!(
                err <= tol,
                "{name} in {dt}: gradient {gi} is off by {err:.3e} of its largest element (tolerance {tol})"
            );
        }
    }
}

/// One test per op family, checking each of its cases.
macro_rules! gradcheck_families {
    ($($test:ident: $family:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                for case in ops::cases_of(ops::Family::$family) {
                    check(&case);
                }
            }
        )*
    };
}
for_each_family!(gradcheck_families);

#[test]
fn whole_tiny_gpt() {
    let cfg = GptConfig {
        vocab_size: 11,
        block_size: 6,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
    };
    let model = Gpt::new(cfg).unwrap();
    // Every parameter of the model is a checked operand, recorded under its own
    // name so that the model's forward pass binds to it; then ids and targets.
    let mut args: Vec<Arg> = model
        .param_specs()
        .iter()
        .map(|s| Arg::Named(s.name.clone(), s.shape.dims().to_vec()))
        .collect();
    let n = args.len();
    args.push(ids(&[2, 5], 11));
    args.push(ids(&[2, 5], 11));
    // A model, not an op: no row of the op list, no parity test on backends.
    // Its 11 classes padded to 128 logits: the padding rows of the tied
    // embedding get a zero gradient, as central differences say.
    assert_eq!(model.config.padded_vocab(), 128);
    check(&OpCase::new("gpt", args, move |g, v| {
        let logits = model.forward(g, v[n])?;
        Ok(vec![g.cross_entropy_classes(logits, v[n + 1], 11)?])
    }));
}

/// Op::CrossEntropyFused in f64: its loss is Op::CrossEntropy's and its
/// dlogits the loss's gradient by central differences (times the seed), 0
/// exactly past the classes; with the logits computed (so dlogits takes
/// their memory) and bound (so it cannot).
#[test]
fn fused_cross_entropy_is_the_loss_and_its_gradient() {
    use headroom::graph::Op;
    let (r, v, classes, seed) = (6, 11, 7, 0.37);
    let mut rng = Rng::new(41);
    let x: Vec<f64> = (0..r * v).map(|_| 2.0 * rng.normal()).collect();
    let t: Vec<i32> = (0..r).map(|_| rng.below(classes) as i32).collect();
    let (targets, seed_t) = (
        HostTensor::from_i32(Shape::new(&[r]), &t).unwrap(),
        HostTensor::from_f64_as(Shape::scalar(), &[seed], DType::F64).unwrap(),
    );
    let mut dev = Device::cpu();
    let run = |dev: &mut Device, x: &[f64], fused: bool, computed: bool| {
        let mut g = Graph::new();
        let xv = g.input("x", [r, v], DType::F64).unwrap();
        let tv = g.input("t", [r], DType::I32).unwrap();
        let sv = g.input("s", [], DType::F64).unwrap();
        let logits = if computed {
            g.scale(xv, 1.0).unwrap()
        } else {
            xv
        };
        let outs = if fused {
            g.apply(Op::CrossEntropyFused { classes }, &[logits, tv, sv])
                .unwrap()
        } else {
            vec![g.cross_entropy_classes(logits, tv, classes).unwrap()]
        };
        let xt = HostTensor::from_f64_as(Shape::new(&[r, v]), x, DType::F64).unwrap();
        let p = lower(&g, &outs).unwrap();
        run_program(
            dev,
            &g,
            &p,
            &[(xv, xt), (tv, targets.clone()), (sv, seed_t.clone())],
        )
    };
    let loss = run(&mut dev, &x, false, false)[0][0];
    for computed in [false, true] {
        let got = run(&mut dev, &x, true, computed);
        assert_eq!(
            got[0][0], loss,
            "the fused loss is the loss (computed {computed})"
        );
        let mut worst = 0.0f64;
        for i in 0..r * v {
            let h = 1e-6;
            let (mut a, mut b) = (x.clone(), x.clone());
            a[i] += h;
            b[i] -= h;
            let fd = seed
                * (run(&mut dev, &a, false, false)[0][0] - run(&mut dev, &b, false, false)[0][0])
                / (2.0 * h);
            if i % v >= classes {
                assert_eq!(got[1][i], 0.0, "padding logit {i} has a gradient");
                assert_eq!(fd, 0.0, "padding logit {i} changes the loss");
            }
            worst = worst.max((got[1][i] - fd).abs());
        }
        println!("cross_entropy_fused f64 (computed {computed}): worst |dlogits − fd| {worst:.2e}");
        assert!(worst < 1e-8, "dlogits vs central differences: {worst}");
    }
}
