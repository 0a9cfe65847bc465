//! A batch: the named host tensors one step reads, each with the batch
//! dimension first, so the trainer can cut micro-batches out of any model's
//! inputs without knowing what they mean.

use crate::error::{Error, Result};
use crate::nn::InputSpec;
use crate::tensor::{DType, HostTensor, Shape};

/// One step's inputs: `B` examples of every input a model declares
/// ([`crate::Model::inputs`]), each input `[B, ..]`. A language model's are
/// `tokens [B, T] i32` and `targets [B, T] i32` ([`Batch::tokens`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Number of examples `B`.
    pub batch: usize,
    /// The sequence length the model's inputs were declared for (`T`; 1 for
    /// a model without sequences).
    pub seq: usize,
    inputs: Vec<(String, HostTensor)>,
}

impl Batch {
    /// A batch of `batch` examples from named inputs, each `[batch, ..]`;
    /// [`Batch::check`] validates them before a step reads them.
    pub fn new(batch: usize, seq: usize, inputs: Vec<(String, HostTensor)>) -> Batch {
        Batch { batch, seq, inputs }
    }

    /// A language model's batch: `tokens` and `targets` (the token after each
    /// input position), `b × t` ids each in row-major order. Lengths are
    /// checked by [`Batch::check`], so a batch built by hand with the wrong
    /// number of ids is a typed error at the step, not a panic here.
    pub fn tokens(b: usize, t: usize, tokens: Vec<i32>, targets: Vec<i32>) -> Batch {
        let ids = |v: Vec<i32>| HostTensor {
            shape: Shape::new(&[b, t]),
            dtype: DType::I32,
            data: bytemuck::cast_slice(&v).to_vec(),
        };
        Batch::new(
            b,
            t,
            vec![
                ("tokens".into(), ids(tokens)),
                ("targets".into(), ids(targets)),
            ],
        )
    }

    /// A batch of `b × t` with no data: the planner's simulations need only
    /// the shapes (the graph's inputs carry them), and must not hold a
    /// batch-sized buffer.
    pub(crate) fn shape_only(b: usize, t: usize) -> Batch {
        Batch::new(b, t, Vec::new())
    }

    /// Whether this batch carries shapes only ([`Batch::shape_only`]).
    pub(crate) fn is_shape_only(&self) -> bool {
        self.inputs.is_empty() && self.batch.checked_mul(self.seq).is_some_and(|n| n > 0)
    }

    /// The inputs, in the order they were given.
    pub fn inputs(&self) -> &[(String, HostTensor)] {
        &self.inputs
    }

    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<&HostTensor> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The ids of an i32 input (`tokens`, `targets`); empty when absent.
    pub fn ids(&self, name: &str) -> Vec<i32> {
        self.input(name)
            .and_then(|t| t.to_i32_vec().ok())
            .unwrap_or_default()
    }

    /// [`Error::Shape`] unless the batch holds at least one example and every
    /// input's bytes fill its shape, whose first dimension is the batch's.
    pub fn check(&self) -> Result<()> {
        let n = self.batch.checked_mul(self.seq);
        if n.is_none_or(|n| n == 0) || self.inputs.is_empty() {
            return Err(Error::shape(
                "batch",
                format!(
                    "a batch of {} × {} with {} inputs holds nothing to train on",
                    self.batch,
                    self.seq,
                    self.inputs.len()
                ),
            ));
        }
        for (name, t) in &self.inputs {
            let want = t.shape.byte_size(t.dtype);
            if t.shape.dims().first() != Some(&self.batch) || want != t.data.len() as u64 {
                return Err(Error::shape(
                    "batch",
                    format!(
                        "input `{name}` of a batch of {} is {} {} with {} bytes; it must be [{}, ..] and hold {} bytes ({} elements of {})",
                        self.batch,
                        t.dtype,
                        t.shape,
                        t.data.len(),
                        self.batch,
                        want,
                        t.shape.numel(),
                        t.dtype
                    ),
                ));
            }
        }
        Ok(())
    }

    /// [`Batch::check`], then that the batch holds exactly the inputs `specs`
    /// declares, each of its dtype and per-example shape.
    pub fn check_inputs(&self, specs: &[InputSpec]) -> Result<()> {
        self.check()?;
        for s in specs {
            let Some(t) = self.input(&s.name) else {
                return Err(Error::shape(
                    "batch",
                    format!(
                        "the model takes an input `{}` ({} [B, {}]) the batch does not hold; it holds {}",
                        s.name,
                        s.dtype,
                        dims(&s.shape),
                        self.names()
                    ),
                ));
            };
            if t.dtype != s.dtype || t.shape.dims()[1..] != s.shape[..] {
                return Err(Error::shape(
                    "batch",
                    format!(
                        "input `{}` is {} {}; the model takes {} [{}, {}]",
                        s.name,
                        t.dtype,
                        t.shape,
                        s.dtype,
                        self.batch,
                        dims(&s.shape)
                    ),
                ));
            }
        }
        if let Some((extra, _)) = self
            .inputs
            .iter()
            .find(|(n, _)| !specs.iter().any(|s| &s.name == n))
        {
            return Err(Error::shape(
                "batch",
                format!("the batch holds an input `{extra}` the model does not take"),
            ));
        }
        Ok(())
    }

    fn names(&self) -> String {
        let n: Vec<&str> = self.inputs.iter().map(|(n, _)| n.as_str()).collect();
        n.join(", ")
    }

    /// Examples `start .. start + n` as a batch of their own.
    pub fn slice(&self, start: usize, n: usize) -> Batch {
        let inputs = self
            .inputs
            .iter()
            .map(|(name, t)| {
                let row = t.data.len() / self.batch.max(1);
                let mut dims = t.shape.dims().to_vec();
                dims[0] = n;
                let part = HostTensor {
                    shape: Shape::new(&dims),
                    dtype: t.dtype,
                    data: t.data[start * row..(start + n) * row].to_vec(),
                };
                (name.clone(), part)
            })
            .collect();
        Batch::new(n, self.seq, inputs)
    }
}

fn dims(d: &[usize]) -> String {
    let d: Vec<String> = d.iter().map(|x| x.to_string()).collect();
    d.join(", ")
}
