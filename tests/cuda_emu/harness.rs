//! Shared by the tests of tests/cuda_emulated_ops.rs: a kernel driver in its
//! scratch folder, the cpu-backend reference a case is compared with, and the
//! comparison itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use super::replay::{io, updated, write_plan, Io, Ty};
use super::support::build_driver;

use headroom::backend::cuda::ops::elementwise as ew;
use headroom::backend::cuda::ops::{cross_entropy, embedding};
use headroom::backend::cuda::plan::OpPlan;

use headroom::graph::{autodiff, Graph, Value};
use headroom::rng::Rng;
use headroom::schedule::{execute, lower, Mode};
use headroom::{DType, Device, HostTensor, Shape};

/// The storage types of the kernels, each with its tolerance: the largest
/// difference relative to the reference's largest element.
pub const DTYPES: [(DType, &str, f64); 3] = [
    (DType::F32, "f32", 1e-5),
    (DType::BF16, "bf16", 2e-2),
    (DType::F16, "f16", 5e-3),
];

/// One driver, `tests/cuda_emu/<name>.cpp`, built into its own scratch folder
/// (kept when the test fails, for a look at the files).
pub struct Driver {
    exe: PathBuf,
    dir: PathBuf,
}

impl Driver {
    pub fn build(cxx: &str, name: &str) -> Driver {
        let dir =
            std::env::temp_dir().join(format!("headroom-emu-ops-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = build_driver(cxx, &dir, name);
        Driver { exe, dir }
    }

    pub fn dir(&self) -> String {
        self.dir.to_str().unwrap().to_string()
    }

    pub fn write(&self, name: &str, v: &[f64]) {
        let bytes: Vec<u8> = v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect();
        std::fs::write(self.dir.join(format!("{name}.f32")), bytes).unwrap();
    }

    pub fn write_ids(&self, name: &str, v: &[i32]) {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(self.dir.join(format!("{name}.i32")), bytes).unwrap();
    }

    pub fn read(&self, name: &str) -> Vec<f64> {
        let b = std::fs::read(self.dir.join(format!("{name}.f32"))).unwrap();
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    }

    /// Replays `plan` for storage type `dt` on the files of `ins` and `outs`
    /// (a driver built on tests/cuda_emu/replay.h).
    pub fn replay(&self, plan: &OpPlan, dt: DType, ins: &[Io], outs: &[Io]) {
        write_plan(&self.dir, plan, dt, ins, outs);
        self.run(&[self.dir()]);
    }

    /// Runs the driver with `args` (which name the scratch folder where the driver wants it).
    pub fn run(&self, args: &[String]) {
        let out = Command::new(&self.exe).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "the emulated kernels failed ({args:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `v` rounded to `dt` (as an upload to a `dt` tensor would), widened back.
pub fn round(v: &[f64], dt: DType) -> Vec<f64> {
    HostTensor::from_f64_as(Shape::new(&[v.len()]), v, dt)
        .unwrap()
        .to_f64_vec()
}

pub fn normal(rng: &mut Rng, n: usize, scale: f64, shift: f64) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * scale + shift).collect()
}

/// Largest difference relative to the reference's largest element; a NaN
/// (an element left unwritten) counts as infinitely far.
pub fn rel_err(want: &[f64], got: &[f64]) -> f64 {
    assert_eq!(want.len(), got.len(), "output sizes differ");
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    want.iter().zip(got).fold(0f64, |m, (a, b)| {
        let d = (a - b).abs();
        m.max(if d.is_nan() { f64::INFINITY } else { d })
    }) / scale
}

/// Prints the errors of one case on one line, then fails on any over `tol`.
pub fn check(case: &str, tol: f64, outputs: &[(&str, &[f64], &[f64])]) {
    let errs: Vec<f64> = outputs.iter().map(|(_, w, g)| rel_err(w, g)).collect();
    let line: Vec<String> = outputs
        .iter()
        .zip(&errs)
        .map(|((name, _, _), e)| format!("{name} {e:.2e}"))
        .collect();
    println!("{case}: {}", line.join(", "));
    for ((name, _, _), &e) in outputs.iter().zip(&errs) {
        assert!(
            e <= tol,
            "{case}: {name} off by {e:.2e} of its largest element (tolerance {tol:.0e})"
        );
    }
}

/// A graph run on the cpu backend, with the data of its operands.
pub struct Reference {
    pub g: Graph,
    data: Vec<(Value, HostTensor)>,
}

impl Reference {
    pub fn new() -> Reference {
        Reference {
            g: Graph::new(),
            data: Vec::new(),
        }
    }

    pub fn operand(&mut self, shape: &[usize], v: &[f64], dt: DType, param: bool) -> Value {
        let name = format!("x{}", self.data.len());
        let s = Shape::new(shape);
        let x = if param {
            self.g.param(&name, s.clone(), dt)
        } else {
            self.g.input(&name, s.clone(), dt)
        }
        .unwrap();
        self.data
            .push((x, HostTensor::from_f64_as(s, v, dt).unwrap()));
        x
    }

    /// An f64 operand that gradients are taken with respect to.
    pub fn param(&mut self, shape: &[usize], v: &[f64]) -> Value {
        self.operand(shape, v, DType::F64, true)
    }

    pub fn input(&mut self, shape: &[usize], v: &[f64]) -> Value {
        self.operand(shape, v, DType::F64, false)
    }

    pub fn ids(&mut self, shape: &[usize], ids: &[i32]) -> Value {
        let name = format!("x{}", self.data.len());
        let x = self.g.input(&name, Shape::new(shape), DType::I32).unwrap();
        self.data
            .push((x, HostTensor::from_i32(Shape::new(shape), ids).unwrap()));
        x
    }

    /// The gradients w.r.t. `wrt` of Σₖ Σ yₖ ⊙ wₖ over the pairs (yₖ, wₖ): the
    /// gradient reaching each yₖ is wₖ, exactly.
    pub fn grads(&mut self, terms: &[(Value, Value)], wrt: &[Value]) -> Vec<Value> {
        let g = &mut self.g;
        let mut loss = None;
        for &(y, w) in terms {
            let p = g.mul(y, w).unwrap();
            let axes: Vec<usize> = (0..g.shape(p).rank()).collect();
            let t = g.sum(p, &axes).unwrap();
            loss = Some(match loss {
                None => t,
                Some(l) => g.add(l, t).unwrap(),
            });
        }
        autodiff::backward(g, loss.unwrap(), wrt).unwrap()
    }

    pub fn try_eval(mut self, outputs: &[Value]) -> headroom::Result<Vec<Vec<f64>>> {
        // A value may also be read by another node: copy so each output is its own.
        let outputs: Vec<Value> = outputs
            .iter()
            .map(|&v| self.g.scale(v, 1.0).unwrap())
            .collect();
        let prog = lower(&self.g, &outputs)?;
        let mut dev = Device::cpu();
        let mut ts = Vec::new();
        for (v, h) in &self.data {
            ts.push((*v, dev.upload(h)?));
        }
        let bind: HashMap<_, _> = ts.iter().map(|(v, t)| (*v, t.view())).collect();
        let res = execute(&mut dev, &self.g, &prog, &bind, Mode::Train)?;
        res.iter()
            .map(|t| Ok(dev.download(t.view())?.to_f64_vec()))
            .collect()
    }

    pub fn eval(self, outputs: &[Value]) -> Vec<Vec<f64>> {
        self.try_eval(outputs).unwrap()
    }
}

pub fn s<T: ToString>(x: T) -> String {
    x.to_string()
}

/// Op::Embedding and its backward replayed as the backend plans them (on the
/// embedding driver): `ids [..]` into a `table` of `vocab` rows, `dy` the
/// output's gradient; the results are the files out and dtable.
pub fn run_embedding(
    d: &Driver,
    dt: DType,
    ids: (&[usize], &[i32]),
    vocab: usize,
    table: &[f64],
    dy: &[f64],
) {
    let (ishape, n, c, t) = (Shape::new(ids.0), ids.1.len(), table.len() / vocab, Ty::T);
    d.write_ids("ids", ids.1);
    d.write("table", table);
    d.write("dy", dy);
    let (idv, tv, dyv) = (
        io("ids", Ty::I32, n),
        io("table", t, vocab * c),
        io("dy", t, n * c),
    );
    let forward = embedding::plan_forward(&ishape, &Shape::new(&[vocab, c]));
    d.replay(&forward, dt, &[idv, tv], &[io("out", t, n * c)]);
    let backward = embedding::plan_backward(&ishape, &Shape::new(&[ids.0, &[c]].concat()), vocab);
    d.replay(&backward, dt, &[idv, dyv], &[io("dtable", t, vocab * c)]);
}

/// Op::CrossEntropy and its backward over the first `classes` logits of each
/// row, replayed as the backend plans them (on the cross_entropy driver), on
/// the files x [logits], targets and dloss; the results are the files loss,
/// dlogits and workspace (each row's loss).
pub fn run_cross_entropy(d: &Driver, dt: DType, logits: &Shape, classes: usize) {
    let (r, v) = (logits.rows(), logits.last());
    let (xs, ts) = (io("x", Ty::T, r * v), io("targets", Ty::I32, r));
    let loss = io("loss", Ty::F32, 1);
    let forward = cross_entropy::plan_forward(logits, classes);
    d.replay(&forward, dt, &[xs, ts], &[loss]);
    let ins = [xs, ts, io("dloss", Ty::F32, 1)];
    let backward = cross_entropy::plan_backward(logits, classes);
    d.replay(&backward, dt, &ins, &[io("dlogits", Ty::T, r * v)]);
}

/// Every elementwise launch replayed as the backend plans it (on the
/// elementwise driver), on the files a [ashape], b [bshape] (repeating over a)
/// and dy [ashape]: the files add, mul, scale, fill, gelu, gelu_backward,
/// bias_gelu and bias_gelu_backward, and accumulate (its file, a copy of a,
/// += dy in place). `aligned` as the host would find the operands (false: the
/// one-element-a-thread kernels). Returns the kernels launched.
pub fn run_elementwise(
    d: &Driver,
    dt: DType,
    (ashape, bshape): (&[usize], &[usize]),
    factor: f64,
    value: f64,
    aligned: bool,
) -> Vec<String> {
    let (sa, sb) = (Shape::new(ashape), Shape::new(bshape));
    let (n, t) = (sa.numel(), Ty::T);
    let fit = ew::Fit { dtype: dt, aligned };
    let (a, b, dy) = (io("a", t, n), io("b", t, sb.numel()), io("dy", t, n));
    let out = |name| [io(name, t, n)];
    let mut launched = Vec::new();
    let mut replay = |plan: &OpPlan, ins: &[Io], outs: &[Io]| {
        launched.extend(plan.launches.iter().map(|l| l.entry.symbol(dt).unwrap()));
        d.replay(plan, dt, ins, outs);
    };
    replay(&ew::plan_add(&sa, &sb, fit), &[a, b], &out("add"));
    replay(&ew::plan_mul(&sa, &sb, fit), &[a, b], &out("mul"));
    replay(&ew::plan_scale(&sa, factor, fit), &[a], &out("scale"));
    replay(&ew::plan_fill(&sa, value, fit), &[], &out("fill"));
    let acc = [updated("accumulate", t, n)];
    replay(&ew::plan_accumulate(&sa, fit), &[dy], &acc);
    replay(&ew::plan_gelu_forward(&sa, fit), &[a], &out("gelu"));
    let gelu_backward = ew::plan_gelu_backward(&sa, fit);
    replay(&gelu_backward, &[a, dy], &out("gelu_backward"));
    let bias_gelu = ew::plan_bias_gelu_forward(&sa, &sb, fit);
    replay(&bias_gelu, &[a, b], &out("bias_gelu"));
    let bias_gelu_backward = ew::plan_bias_gelu_backward(&sa, &sb, fit);
    replay(&bias_gelu_backward, &[a, b, dy], &out("bias_gelu_backward"));
    replay(&ew::plan_silu_forward(&sa, fit), &[a], &out("silu"));
    let silu_backward = ew::plan_silu_backward(&sa, fit);
    replay(&silu_backward, &[a, dy], &out("silu_backward"));
    launched
}

/// The elementwise ops of [`run_elementwise`] on a [shapes.0] and b [shapes.1]
/// (repeating over a), against the cpu backend for every storage type;
/// returns each dtype's worst error and the kernels launched for each.
pub fn elementwise_case(
    d: &Driver,
    shapes: (&[usize], &[usize]),
    seed: u64,
    aligned: bool,
) -> Vec<(f64, Vec<String>)> {
    let (ashape, bshape) = shapes;
    let (factor, value) = (0.3, -1.7);
    let (n, nb) = (Shape::new(ashape).numel(), Shape::new(bshape).numel());
    let mut rng = Rng::new(seed);
    let a = normal(&mut rng, n, 2.0, 0.0);
    let b = normal(&mut rng, nb, 0.5, 0.0);
    let dy = normal(&mut rng, n, 1.0, 0.0);
    let mut results = Vec::new();
    for (dt, name, tol) in DTYPES {
        let (a, b, dy) = (round(&a, dt), round(&b, dt), round(&dy, dt));
        let mut re = Reference::new();
        let av = re.input(ashape, &a);
        let bv = re.input(bshape, &b);
        let dyv = re.input(ashape, &dy);
        // Copies of a to differentiate gelu, bias_gelu and silu separately.
        let (a1, a2, a3) = (
            re.param(ashape, &a),
            re.param(ashape, &a),
            re.param(ashape, &a),
        );
        let g = &mut re.g;
        let add = g.add(av, bv).unwrap();
        let mul = g.mul(av, bv).unwrap();
        let scale = g.scale(av, factor).unwrap();
        let fill = g.fill(value, Shape::new(ashape), DType::F64).unwrap();
        let acc = g.add(av, dyv).unwrap();
        let gelu = g.gelu(a1).unwrap();
        let bias_gelu = g.bias_gelu(a2, bv).unwrap();
        let silu = g.silu(a3).unwrap();
        let terms = [(gelu, dyv), (bias_gelu, dyv), (silu, dyv)];
        let gr = re.grads(&terms, &[a1, a2, a3]);
        let want = re.eval(&[
            add, mul, scale, fill, acc, gelu, gr[0], bias_gelu, gr[1], silu, gr[2],
        ]);

        d.write("a", &a);
        d.write("b", &b);
        d.write("dy", &dy);
        d.write("accumulate", &a);
        let launched = run_elementwise(d, dt, (ashape, bshape), factor, value, aligned);
        let names = [
            "add",
            "mul",
            "scale",
            "fill",
            "accumulate",
            "gelu",
            "gelu_backward",
            "bias_gelu",
            "bias_gelu_backward",
            "silu",
            "silu_backward",
        ];
        let got: Vec<Vec<f64>> = names.iter().map(|f| d.read(f)).collect();
        let outputs: Vec<(&str, &[f64], &[f64])> = names
            .iter()
            .zip(want.iter().zip(&got))
            .map(|(&f, (w, g))| (f, w.as_slice(), g.as_slice()))
            .collect();
        let case = format!("elementwise {ashape:?} by {bshape:?} aligned {aligned} {name}");
        check(&case, tol, &outputs);
        let worst = outputs
            .iter()
            .map(|(_, w, g)| rel_err(w, g))
            .fold(0f64, f64::max);
        results.push((worst, launched));
    }
    results
}

/// The outputs of Op::LayerNorm and Op::LayerNormBackward, in order.
pub const LAYERNORM_OUTPUTS: [&str; 6] = ["y", "mean", "rstd", "dx", "dw", "db"];

/// One LayerNorm case on `sh` in `dt`: inputs drawn from `seed`, the host's
/// `forward` and `backward` plans replayed (the backward fed the forward's own
/// mean and rstd), and the cpu reference; `(want, got)` of
/// [`LAYERNORM_OUTPUTS`].
pub fn run_layernorm(
    d: &Driver,
    sh: &Shape,
    seed: u64,
    dt: DType,
    (forward, backward): (&OpPlan, &OpPlan),
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (shape, r, c) = (sh.dims(), sh.rows(), sh.last());
    let mut rng = Rng::new(seed);
    let x = round(&normal(&mut rng, r * c, 2.0, 0.7), dt);
    let w = round(&normal(&mut rng, c, 0.5, 1.0), dt);
    let b = round(&normal(&mut rng, c, 0.2, 0.0), dt);
    let dy = round(&normal(&mut rng, r * c, 1.0, 0.0), dt);
    let mut re = Reference::new();
    let (xv, wv, bv) = (re.param(shape, &x), re.param(&[c], &w), re.param(&[c], &b));
    let dyv = re.input(shape, &dy);
    let ln = headroom::graph::Op::LayerNorm {
        eps: 1e-5,
        out: None,
    };
    let o = re.g.apply(ln, &[xv, wv, bv]).unwrap();
    let gr = re.grads(&[(o[0], dyv)], &[xv, wv, bv]);
    let want = re.eval(&[o[0], o[1], o[2], gr[0], gr[1], gr[2]]);

    for (f, v) in [("x", &x), ("w", &w), ("b", &b), ("dy", &dy)] {
        d.write(f, v);
    }
    let (t, mean, rstd) = (Ty::T, io("mean", Ty::F32, r), io("rstd", Ty::F32, r));
    let (xs, ws, bs) = (io("x", t, r * c), io("w", t, c), io("b", t, c));
    d.replay(forward, dt, &[xs, ws, bs], &[io("y", t, r * c), mean, rstd]);
    let ins = [io("dy", t, r * c), xs, ws, mean, rstd];
    let outs = [io("dx", t, r * c), io("dw", t, c), io("db", t, c)];
    d.replay(backward, dt, &ins, &outs);
    let got = LAYERNORM_OUTPUTS.iter().map(|f| d.read(f)).collect();
    (want, got)
}

/// The outputs of Op::RmsNorm and Op::RmsNormBackward, in order.
pub const RMSNORM_OUTPUTS: [&str; 4] = ["y", "rstd", "dx", "dw"];

/// One RMSNorm case on `sh`: x and w of dtype `x_dt` drawn from `seed`, dy of
/// `dy_dt` (the low dtype of a mixed op, else `x_dt`), the host's `forward`
/// and `backward` plans replayed for kernels named by `dt` (the backward fed
/// the forward's own rstd, and y of `dy_dt` too), and the cpu reference;
/// `(want, got)` of [`RMSNORM_OUTPUTS`].
pub fn run_rmsnorm(
    d: &Driver,
    sh: &Shape,
    seed: u64,
    (x_dt, dy_dt, dt): (DType, DType, DType),
    (forward, backward): (&OpPlan, &OpPlan),
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (shape, r, c) = (sh.dims(), sh.rows(), sh.last());
    let mut rng = Rng::new(seed);
    let x = round(&normal(&mut rng, r * c, 2.0, 0.7), x_dt);
    let w = round(&normal(&mut rng, c, 0.5, 1.0), x_dt);
    let dy = round(&normal(&mut rng, r * c, 1.0, 0.0), dy_dt);
    let mut re = Reference::new();
    let (xv, wv) = (re.param(shape, &x), re.param(&[c], &w));
    let dyv = re.input(shape, &dy);
    let op = headroom::graph::Op::RmsNorm {
        eps: 1e-5,
        out: None,
    };
    let o = re.g.apply(op, &[xv, wv]).unwrap();
    let gr = re.grads(&[(o[0], dyv)], &[xv, wv]);
    let want = re.eval(&[o[0], o[1], gr[0], gr[1]]);

    for (f, v) in [("x", &x), ("w", &w), ("dy", &dy)] {
        d.write(f, v);
    }
    let ty = |of: DType| if of == dt { Ty::T } else { Ty::Of(of) };
    let (tx, tdy, rstd) = (ty(x_dt), ty(dy_dt), io("rstd", Ty::F32, r));
    let (xs, ws) = (io("x", tx, r * c), io("w", tx, c));
    d.replay(forward, dt, &[xs, ws], &[io("y", tdy, r * c), rstd]);
    let ins = [io("dy", tdy, r * c), xs, ws, rstd];
    let outs = [io("dx", tx, r * c), io("dw", tx, c)];
    d.replay(backward, dt, &ins, &outs);
    let got = RMSNORM_OUTPUTS.iter().map(|f| d.read(f)).collect();
    (want, got)
}
