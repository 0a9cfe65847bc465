//! Every op's gradient against central finite differences, all in f64 on the cpu
//! backend: random inputs, several shapes, broadcast and transposed cases. The
//! loss is Σ op(x) ⊙ r for a fixed random r, so every output element matters.

use std::collections::HashMap;

use headroom::graph::{autodiff, Graph, Value};
use headroom::nn::Model;
use headroom::rng::Rng;
use headroom::schedule::{execute, lower, Mode};
use headroom::{DType, Device, Gpt, GptConfig, HostTensor, Shape};

enum Arg {
    /// A float operand that gets a gradient.
    F(&'static [usize]),
    /// A float operand recorded under a parameter name (so model code finds it).
    Named(String, Vec<usize>),
    /// Integer ids below the bound (no gradient).
    Ids(&'static [usize], i32),
}

/// Builds `build(args)` in f64, differentiates Σ out ⊙ r, and compares each
/// gradient element (up to `max_elems` per operand) with central differences.
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
    let mut rng = Rng::new(name.bytes().map(|b| b as u64).sum());
    let mut g = Graph::new();
    g.set_param_dtype(DType::F64);
    let mut vals = Vec::new();
    let mut host = Vec::new();
    let mut wrt = Vec::new();
    for (i, a) in args.iter().enumerate() {
        match a {
            Arg::F(_) | Arg::Named(..) => {
                let (name, s) = match a {
                    Arg::Named(n, s) => (n.clone(), Shape::new(s)),
                    Arg::F(s) => (format!("x{i}"), Shape::new(s)),
                    _ => unreachable!(),
                };
                let v = g.param(&name, s.clone(), DType::F64).unwrap();
                let data: Vec<f64> = (0..s.numel()).map(|_| 0.5 * rng.normal()).collect();
                host.push(HostTensor::from_f64_as(s, &data, DType::F64).unwrap());
                wrt.push((vals.len(), v));
                vals.push(v);
            }
            Arg::Ids(s, bound) => {
                let v = g
                    .input(&format!("x{i}"), Shape::new(s), DType::I32)
                    .unwrap();
                let data: Vec<i32> = (0..Shape::new(s).numel())
                    .map(|_| rng.below(*bound as usize) as i32)
                    .collect();
                host.push(HostTensor::from_i32(Shape::new(s), &data).unwrap());
                vals.push(v);
            }
        }
    }
    let outs = build(&mut g, &vals).unwrap();
    let mut loss = None;
    let mut weights = Vec::new();
    for (k, &o) in outs.iter().enumerate() {
        let s = g.shape(o).clone();
        let r = g.input(&format!("r{k}"), s.clone(), DType::F64).unwrap();
        let data: Vec<f64> = (0..s.numel()).map(|_| rng.normal()).collect();
        weights.push((
            r,
            HostTensor::from_f64_as(s.clone(), &data, DType::F64).unwrap(),
        ));
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
    let mut outputs = vec![loss];
    outputs.extend(&grads);
    let train = lower(&g, &outputs).unwrap();
    let fwd = lower(&g, &[loss]).unwrap();

    let mut dev = Device::cpu();
    let run = |dev: &mut Device, host: &[HostTensor], prog: &headroom::schedule::Program| {
        let mut ts = Vec::new();
        for (&v, h) in vals.iter().zip(host) {
            ts.push((v, dev.upload(h).unwrap()));
        }
        for (r, h) in &weights {
            ts.push((*r, dev.upload(h).unwrap()));
        }
        let bind: HashMap<Value, _> = ts.iter().map(|(v, t)| (*v, t.view())).collect();
        let outs = execute(dev, &g, prog, &bind, Mode::Train).unwrap();
        let res: Vec<Vec<f64>> = outs
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
    };
    let analytic = run(&mut dev, &host, &train);
    let max_elems = 48;
    for (gi, &(arg, _)) in wrt.iter().enumerate() {
        let n = host[arg].numel();
        let step = n.div_ceil(max_elems).max(1);
        for e in (0..n).step_by(step) {
            let mut probe = |delta: f64| {
                let mut h2 = host.clone();
                let mut v = h2[arg].to_f64_vec();
                v[e] += delta;
                h2[arg] = HostTensor::from_f64_as(h2[arg].shape.clone(), &v, DType::F64).unwrap();
                run(&mut dev, &h2, &fwd)[0][0]
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
