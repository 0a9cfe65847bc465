//! Every op's gradient against central finite differences, all in f64 on the cpu
//! backend: random inputs, several shapes, broadcast and transposed cases. The
//! loss is Σ op(x) ⊙ r for a fixed random r, so every output element matters.

use std::collections::HashMap;

use headroom::graph::{autodiff, Graph, Value};
use headroom::nn::Model;
use headroom::rng::Rng;
use headroom::schedule::{execute, lower, Mode, Program};
use headroom::{DType, Device, Gpt, GptConfig, HostTensor, Shape};

enum Arg {
    /// A float operand that gets a gradient.
    F(&'static [usize]),
    /// A float operand recorded under a parameter name (so model code finds it).
    Named(String, Vec<usize>),
    /// Integer ids below the bound (no gradient).
    Ids(&'static [usize], i32),
}

type Build<'a> = &'a dyn Fn(&mut Graph, &[Value]) -> headroom::Result<Vec<Value>>;

/// The operands as host tensors: float ones as f64 values, ids as i32.
fn draw(name: &str, args: &[Arg]) -> (Vec<Option<Vec<f64>>>, Vec<HostTensor>, Rng) {
    let mut rng = Rng::new(name.bytes().map(|b| b as u64).sum());
    let mut floats = Vec::new();
    let mut ids = Vec::new();
    for a in args {
        match a {
            Arg::F(s) => {
                floats.push(Some(
                    (0..Shape::new(s).numel())
                        .map(|_| 0.5 * rng.normal())
                        .collect(),
                ));
                ids.push(HostTensor::zeros([0], DType::I32));
            }
            Arg::Named(_, s) => {
                floats.push(Some(
                    (0..Shape::new(s).numel())
                        .map(|_| 0.5 * rng.normal())
                        .collect(),
                ));
                ids.push(HostTensor::zeros([0], DType::I32));
            }
            Arg::Ids(s, bound) => {
                let v: Vec<i32> = (0..Shape::new(s).numel())
                    .map(|_| rng.below(*bound as usize) as i32)
                    .collect();
                floats.push(None);
                ids.push(HostTensor::from_i32(Shape::new(s), &v).unwrap());
            }
        }
    }
    (floats, ids, rng)
}

/// A built case: the graph in `dt`, its operand values, loss and gradients.
struct Case {
    g: Graph,
    vals: Vec<Value>,
    weights: Vec<(Value, Vec<f64>)>,
    loss: Value,
    grads: Vec<(usize, Value)>,
}

fn build_case(
    args: &[Arg],
    dt: DType,
    rng: &mut Rng,
    build: Build,
    autocast: Option<DType>,
) -> Case {
    let mut g = Graph::new();
    g.set_param_dtype(dt);
    let mut vals = Vec::new();
    let mut wrt = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let v = match a {
            Arg::F(s) => g.param(&format!("x{i}"), Shape::new(s), dt).unwrap(),
            Arg::Named(n, s) => g.param(n, Shape::new(s), dt).unwrap(),
            Arg::Ids(s, _) => g
                .input(&format!("x{i}"), Shape::new(s), DType::I32)
                .unwrap(),
        };
        if !matches!(a, Arg::Ids(..)) {
            wrt.push((i, v));
        }
        vals.push(v);
    }
    g.set_autocast(autocast);
    let outs = build(&mut g, &vals).unwrap();
    g.set_autocast(None);
    let mut loss = None;
    let mut weights = Vec::new();
    for (k, &o) in outs.iter().enumerate() {
        let s = g.shape(o).clone();
        let odt = g.dtype(o);
        let r = g.input(&format!("r{k}"), s.clone(), odt).unwrap();
        weights.push((r, (0..s.numel()).map(|_| rng.normal()).collect()));
        let p = g.mul(o, r).unwrap();
        let axes: Vec<usize> = (0..s.rank()).collect();
        let term = g.sum(p, &axes).unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => g.add(l, term).unwrap(),
        });
    }
    let loss = loss.unwrap();
    let params: Vec<Value> = wrt.iter().map(|w| w.1).collect();
    let grads = autodiff::backward(&mut g, loss, &params).unwrap();
    Case {
        g,
        vals,
        weights,
        loss,
        grads: wrt.iter().map(|w| w.0).zip(grads).collect(),
    }
}

/// Runs `prog` of `case` with float operands `floats` (stored in their graph
/// dtype) and returns every output as f64.
fn run(
    dev: &mut Device,
    case: &Case,
    floats: &[Option<Vec<f64>>],
    ids: &[HostTensor],
    prog: &Program,
) -> Vec<Vec<f64>> {
    let mut ts = Vec::new();
    for ((&v, f), id) in case.vals.iter().zip(floats).zip(ids) {
        let h = match f {
            Some(x) => {
                HostTensor::from_f64_as(case.g.shape(v).clone(), x, case.g.dtype(v)).unwrap()
            }
            None => id.clone(),
        };
        ts.push((v, dev.upload(&h).unwrap()));
    }
    for (r, x) in &case.weights {
        let h = HostTensor::from_f64_as(case.g.shape(*r).clone(), x, case.g.dtype(*r)).unwrap();
        ts.push((*r, dev.upload(&h).unwrap()));
    }
    let bind: HashMap<Value, _> = ts.iter().map(|(v, t)| (*v, t.view())).collect();
    let outs = execute(dev, &case.g, prog, &bind, Mode::Train).unwrap();
    let res = outs
        .iter()
        .map(|t| dev.download(t.view()).unwrap().to_f64_vec())
        .collect();
    for t in outs {
        dev.free(t);
    }
    for (_, t) in ts {
        dev.free(t);
    }
    res
}

fn train_program(case: &Case) -> Program {
    let mut outputs = vec![case.loss];
    outputs.extend(case.grads.iter().map(|g| g.1));
    lower(&case.g, &outputs).unwrap()
}

/// Builds `build(args)` in f64, differentiates Σ out ⊙ r, and compares each
/// gradient element (up to 48 per operand) with central differences; then
/// checks the same gradients computed in bf16 and f16 against the f64 ones.
fn check(
    name: &str,
    args: &[Arg],
    build: impl Fn(&mut Graph, &[Value]) -> headroom::Result<Vec<Value>>,
) {
    check_with(name, args, 1e-6, 1e-6, build)
}

fn check_with(
    name: &str,
    args: &[Arg],
    h: f64,
    tol: f64,
    build: impl Fn(&mut Graph, &[Value]) -> headroom::Result<Vec<Value>>,
) {
    let (floats, ids, mut rng) = draw(name, args);
    let mut wrng = rng.clone();
    let case = build_case(args, DType::F64, &mut rng, &build, None);
    let train = train_program(&case);
    let fwd = lower(&case.g, &[case.loss]).unwrap();
    let mut dev = Device::cpu();
    let analytic = run(&mut dev, &case, &floats, &ids, &train);
    let max_elems = 48;
    for (gi, &(arg, _)) in case.grads.iter().enumerate() {
        let n = floats[arg].as_ref().unwrap().len();
        let step = n.div_ceil(max_elems).max(1);
        for e in (0..n).step_by(step) {
            let mut probe = |delta: f64| {
                let mut f2 = floats.clone();
                f2[arg].as_mut().unwrap()[e] += delta;
                run(&mut dev, &case, &f2, &ids, &fwd)[0][0]
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
        check_low_precision(name, args, &floats, &ids, &mut wrng, &build);
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
fn check_low_precision(
    name: &str,
    args: &[Arg],
    floats: &[Option<Vec<f64>>],
    ids: &[HostTensor],
    wrng: &mut Rng,
    build: Build,
) {
    let model = args.iter().any(|a| matches!(a, Arg::Named(..)));
    for dt in [DType::BF16, DType::F16] {
        let rounded: Vec<Option<Vec<f64>>> = floats
            .iter()
            .map(|f| {
                f.as_ref().map(|x| {
                    if model {
                        x.clone()
                    } else {
                        HostTensor::from_f64_as([x.len()], x, dt)
                            .unwrap()
                            .to_f64_vec()
                    }
                })
            })
            .collect();
        let mut r1 = wrng.clone();
        let mut r2 = wrng.clone();
        let mut reference = build_case(args, DType::F64, &mut r1, build, None);
        let mut low = if model {
            build_case(args, DType::F32, &mut r2, build, Some(dt))
        } else {
            build_case(args, dt, &mut r2, build, None)
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
        let want = run(
            &mut dev,
            &reference,
            &rounded,
            ids,
            &train_program(&reference),
        );
        let got = run(&mut dev, &low, &rounded, ids, &train_program(&low));
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

#[test]
fn embedding() {
    check(
        "embedding",
        &[Arg::Ids(&[2, 3], 5), Arg::F(&[5, 4])],
        |g, v| Ok(vec![g.embedding(v[0], v[1])?]),
    );
    check(
        "embedding_1d",
        &[Arg::Ids(&[7], 3), Arg::F(&[3, 2])],
        |g, v| Ok(vec![g.embedding(v[0], v[1])?]),
    );
}

#[test]
fn matmul_plain_and_transposed() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a: &'static [usize] = if ta { &[4, 3] } else { &[3, 4] };
        let b: &'static [usize] = if tb { &[5, 4] } else { &[4, 5] };
        check(
            &format!("matmul_{ta}_{tb}"),
            &[Arg::F(a), Arg::F(b)],
            move |g, v| Ok(vec![g.matmul_t(v[0], v[1], ta, tb)?]),
        );
    }
}

#[test]
fn matmul_batched_and_shared() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a: &'static [usize] = if ta { &[2, 4, 3] } else { &[2, 3, 4] };
        let b: &'static [usize] = if tb { &[2, 5, 4] } else { &[2, 4, 5] };
        let b2: &'static [usize] = if tb { &[5, 4] } else { &[4, 5] };
        let a2: &'static [usize] = if ta { &[4, 3] } else { &[3, 4] };
        check(
            &format!("bmm_{ta}_{tb}"),
            &[Arg::F(a), Arg::F(b)],
            move |g, v| Ok(vec![g.matmul_t(v[0], v[1], ta, tb)?]),
        );
        // A weight shared by the batch (the Linear case when not ta).
        check(
            &format!("bmm_shared_b_{ta}_{tb}"),
            &[Arg::F(a), Arg::F(b2)],
            move |g, v| Ok(vec![g.matmul_t(v[0], v[1], ta, tb)?]),
        );
        check(
            &format!("bmm_shared_a_{ta}_{tb}"),
            &[Arg::F(a2), Arg::F(b)],
            move |g, v| Ok(vec![g.matmul_t(v[0], v[1], ta, tb)?]),
        );
    }
    check(
        "bmm_4d",
        &[Arg::F(&[2, 2, 3, 4]), Arg::F(&[4, 2])],
        |g, v| Ok(vec![g.matmul(v[0], v[1])?]),
    );
}

#[test]
fn add_and_mul_with_broadcast() {
    for (a, b) in [
        (&[2usize, 3, 4][..], &[2usize, 3, 4][..]),
        (&[2, 3, 4], &[4]),
        (&[2, 3, 4], &[3, 4]),
        (&[5], &[5]),
    ] {
        let (a, b): (&'static [usize], &'static [usize]) = (a, b);
        check(
            &format!("add_{a:?}_{b:?}"),
            &[Arg::F(a), Arg::F(b)],
            |g, v| Ok(vec![g.add(v[0], v[1])?]),
        );
        check(
            &format!("mul_{a:?}_{b:?}"),
            &[Arg::F(a), Arg::F(b)],
            |g, v| Ok(vec![g.mul(v[0], v[1])?]),
        );
    }
    // The same operand on both sides: gradients from two uses must add up.
    check("add_self", &[Arg::F(&[3, 2])], |g, v| {
        Ok(vec![g.mul(v[0], v[0])?])
    });
}

#[test]
fn scale_and_gelu() {
    check("scale", &[Arg::F(&[3, 5])], |g, v| {
        Ok(vec![g.scale(v[0], -0.7)?])
    });
    check("gelu", &[Arg::F(&[4, 6])], |g, v| Ok(vec![g.gelu(v[0])?]));
    check("bias_gelu", &[Arg::F(&[2, 3, 5]), Arg::F(&[5])], |g, v| {
        Ok(vec![g.bias_gelu(v[0], v[1])?])
    });
    check("gelu_3d", &[Arg::F(&[2, 2, 3])], |g, v| {
        Ok(vec![g.gelu(v[0])?])
    });
}

#[test]
fn layernorm() {
    for s in [&[2usize, 3, 8][..], &[5, 4], &[6]] {
        let s: &'static [usize] = s;
        let c: &'static [usize] = Box::leak(vec![*s.last().unwrap()].into_boxed_slice());
        check(
            &format!("layernorm_{s:?}"),
            &[Arg::F(s), Arg::F(c), Arg::F(c)],
            |g, v| Ok(vec![g.layernorm(v[0], v[1], v[2], 1e-5)?]),
        );
    }
}

#[test]
fn attention() {
    check("attention_2h", &[Arg::F(&[2, 5, 12])], |g, v| {
        Ok(vec![g.attention(v[0], 2)?])
    });
    check("attention_1h", &[Arg::F(&[1, 4, 9])], |g, v| {
        Ok(vec![g.attention(v[0], 1)?])
    });
    check("attention_t1", &[Arg::F(&[3, 1, 6])], |g, v| {
        Ok(vec![g.attention(v[0], 2)?])
    });
    check("attention_4h", &[Arg::F(&[1, 6, 24])], |g, v| {
        Ok(vec![g.attention(v[0], 4)?])
    });
}

#[test]
fn softmax() {
    check("softmax", &[Arg::F(&[3, 7])], |g, v| {
        Ok(vec![g.softmax(v[0])?])
    });
    check("softmax_3d", &[Arg::F(&[2, 2, 5])], |g, v| {
        Ok(vec![g.softmax(v[0])?])
    });
}

#[test]
fn cross_entropy() {
    check("ce", &[Arg::F(&[2, 3, 6]), Arg::Ids(&[2, 3], 6)], |g, v| {
        Ok(vec![g.cross_entropy(v[0], v[1])?])
    });
    check("ce_2d", &[Arg::F(&[5, 4]), Arg::Ids(&[5], 4)], |g, v| {
        Ok(vec![g.cross_entropy(v[0], v[1])?])
    });
}

#[test]
fn views() {
    check("reshape", &[Arg::F(&[2, 6])], |g, v| {
        Ok(vec![g.reshape(v[0], [3, 4])?])
    });
    check("reshape_then_op", &[Arg::F(&[2, 6])], |g, v| {
        let r = g.reshape(v[0], [3, 4])?;
        Ok(vec![g.gelu(r)?])
    });
    for (a, b) in [(0, 1), (1, 2), (0, 2)] {
        check(
            &format!("transpose_{a}{b}"),
            &[Arg::F(&[2, 3, 4])],
            move |g, v| Ok(vec![g.transpose(v[0], a, b)?]),
        );
    }
    check("split_last", &[Arg::F(&[2, 6])], |g, v| {
        g.split(v[0], 1, &[2, 4])
    });
    check("split_first_one_used", &[Arg::F(&[4, 3])], |g, v| {
        Ok(vec![g.split(v[0], 0, &[1, 3])?[1]])
    });
    check("split_middle", &[Arg::F(&[2, 5, 3])], |g, v| {
        g.split(v[0], 1, &[1, 2, 2])
    });
    check("concat", &[Arg::F(&[2, 3]), Arg::F(&[2, 1])], |g, v| {
        Ok(vec![g.concat(&[v[0], v[1]], 1)?])
    });
    check(
        "concat_axis0",
        &[Arg::F(&[1, 3]), Arg::F(&[2, 3])],
        |g, v| Ok(vec![g.concat(&[v[0], v[1]], 0)?]),
    );
}

#[test]
fn reductions() {
    for axes in [&[0usize][..], &[1], &[2], &[0, 2], &[0, 1, 2]] {
        let axes: &'static [usize] = axes;
        check(
            &format!("sum_{axes:?}"),
            &[Arg::F(&[2, 3, 4])],
            move |g, v| Ok(vec![g.sum(v[0], axes)?]),
        );
        check(
            &format!("mean_{axes:?}"),
            &[Arg::F(&[2, 3, 4])],
            move |g, v| Ok(vec![g.mean(v[0], axes)?]),
        );
    }
    check("expand_lead", &[Arg::F(&[3])], |g, v| {
        Ok(vec![g.expand(v[0], &[0], [2, 3])?])
    });
    check("expand_mid", &[Arg::F(&[2, 4])], |g, v| {
        Ok(vec![g.expand(v[0], &[1], [2, 3, 4])?])
    });
}

#[test]
fn cast_round_trip() {
    // f32 in the middle rounds: a larger step and a looser tolerance than the
    // pure-f64 checks, still far tighter than any wrong gradient.
    check_with("cast", &[Arg::F(&[3, 4])], 1e-2, 1e-4, |g, v| {
        let c = g.cast(v[0], DType::F32)?;
        let c = g.gelu(c)?;
        Ok(vec![g.cast(c, DType::F64)?])
    });
}

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
    args.push(Arg::Ids(&[2, 5], 11));
    args.push(Arg::Ids(&[2, 5], 11));
    check("gpt", &args, move |g, v| {
        let logits = model.forward(g, v[n])?;
        Ok(vec![g.cross_entropy(logits, v[n + 1])?])
    });
}
