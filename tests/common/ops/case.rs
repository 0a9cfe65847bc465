//! What a row of the op list is: operands, how to record the op on them, and
//! where their values and the gradient check's step come from.

use headroom::graph::{Graph, Value};
use headroom::Result;

/// One operand of a case.
pub enum Arg {
    /// A float operand of this shape; it gets a gradient.
    F(Vec<usize>),
    /// A float operand recorded under a parameter name so that model code
    /// finds it (whole-model checks; no row of the op list needs one).
    Named(String, Vec<usize>),
    /// Integer ids of this shape, each below the bound; no gradient.
    Ids(Vec<usize>, i32),
}

/// Records the op on the recorded operands (in [`OpCase::args`] order) and
/// returns the outputs to check.
pub type Build = Box<dyn Fn(&mut Graph, &[Value]) -> Result<Vec<Value>>>;

/// One row: an op (or a short chain of them) on operands of fixed shapes.
pub struct OpCase {
    /// Unique among the rows; failures name it.
    pub name: String,
    pub args: Vec<Arg>,
    pub build: Build,
    /// Where the operands' (then the loss weights') random values start.
    pub seed: u64,
    /// Central-difference step of the gradient check.
    pub step: f64,
    /// Relative tolerance of the gradient check; the bf16/f16 gradient check
    /// runs only at the pure-f64 tolerance, 1e-6.
    pub tol: f64,
    /// Whether tests/backends.rs runs it on wgpu (false where the WGSL
    /// kernels reject the shape, such as attention heads over 64).
    pub wgpu: bool,
}

/// The seed of a row named `name`: the sum of its bytes.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().map(|b| b as u64).sum()
}

impl OpCase {
    pub fn new(
        name: impl Into<String>,
        args: impl Into<Vec<Arg>>,
        build: impl Fn(&mut Graph, &[Value]) -> Result<Vec<Value>> + 'static,
    ) -> OpCase {
        let name = name.into();
        OpCase {
            seed: seed_of(&name),
            name,
            args: args.into(),
            build: Box::new(build),
            step: 1e-6,
            tol: 1e-6,
            wgpu: true,
        }
    }

    /// Draws the inputs from `old`'s seed: rows that both test files had
    /// under one name were renamed apart and keep the inputs they had.
    pub fn seeded_as(mut self, old: &str) -> OpCase {
        self.seed = seed_of(old);
        self
    }

    /// Not run on wgpu, whose kernels do not take the case's shape.
    pub fn not_on_wgpu(mut self) -> OpCase {
        self.wgpu = false;
        self
    }

    /// A gradient check with this central-difference step and tolerance.
    pub fn fd(mut self, step: f64, tol: f64) -> OpCase {
        self.step = step;
        self.tol = tol;
        self
    }
}

/// A float operand.
pub fn f(shape: &[usize]) -> Arg {
    Arg::F(shape.to_vec())
}

/// Ids below `bound`.
pub fn ids(shape: &[usize], bound: i32) -> Arg {
    Arg::Ids(shape.to_vec(), bound)
}
