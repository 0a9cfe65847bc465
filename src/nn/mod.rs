//! Layers and the built-in models (GPT-2, Llama). A layer is ordinary Rust that records graph ops; it
//! declares its parameters as [`ParamSpec`]s and gets gradients from autodiff.

mod gpt;
pub mod hf;
mod layers;
mod llama;
mod preset;

pub use gpt::{Gpt, GptConfig, PRESETS, VOCAB_ALIGN};
pub use layers::{Block, CausalSelfAttention, Embedding, LayerNorm, Linear, Mlp};
pub use llama::{Llama, LlamaConfig, LLAMA_PRESETS};
pub use preset::{all_presets, AnyModel, ModelConfig};

use crate::error::{Error, Result};
use crate::graph::{Graph, Value};
use crate::rng::Rng;
use crate::tensor::{DType, HostTensor, Shape};

/// How a parameter starts out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Independent draws from a normal distribution of mean 0.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// All zeros (biases).
    Zeros,
    /// All ones (LayerNorm gains).
    Ones,
}

/// A parameter a layer owns: its name (GPT-2 style, e.g. `h.0.attn.c_attn.weight`),
/// shape and initialisation.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// The name it is recorded and checkpointed under; recording one name twice
    /// gives one (tied) parameter.
    pub name: String,
    /// Its static shape.
    pub shape: Shape,
    /// How [`ParamSpec::init_values`] draws its starting values.
    pub init: Init,
    /// `Some(n)`: only the first `n` rows are real (a vocabulary padded for
    /// the logits GEMM); the rest start at zero, get no gradient, and are left
    /// out of checkpoints ([`ParamSpec::strip`], [`ParamSpec::pad`]).
    pub real_rows: Option<usize>,
}

impl ParamSpec {
    /// A spec named `name` of `shape`, initialised by `init`.
    pub fn new(name: impl Into<String>, shape: impl Into<Shape>, init: Init) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            shape: shape.into(),
            init,
            real_rows: None,
        }
    }

    /// Records this parameter in the graph, in the graph's parameter dtype.
    pub fn record(&self, g: &mut Graph) -> Result<Value> {
        let dt = g.param_dtype();
        g.param(&self.name, self.shape.clone(), dt)
    }

    /// Draws the initial values; padding rows are zero (and draw nothing, so
    /// the real rows get the values an unpadded table would).
    pub fn init_values(&self, rng: &mut Rng) -> HostTensor {
        let n = self.file_shape().numel();
        let mut v: Vec<f32> = match self.init {
            Init::Normal { std } => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
        };
        v.resize(self.shape.numel(), 0.0);
        HostTensor::from_f32(self.shape.clone(), &v).expect("length matches shape")
    }

    /// The shape a checkpoint holds: [`ParamSpec::shape`] without the padding
    /// rows.
    pub fn file_shape(&self) -> Shape {
        match self.real_rows {
            Some(n) => {
                let mut d = self.shape.dims().to_vec();
                d[0] = n;
                Shape::new(&d)
            }
            None => self.shape.clone(),
        }
    }

    /// `t` (this parameter, or a moment of it, f32) without its padding rows.
    pub fn strip(&self, t: HostTensor) -> HostTensor {
        let shape = self.file_shape();
        if shape == t.shape {
            return t;
        }
        let mut data = t.data;
        data.truncate(shape.byte_size(t.dtype) as usize);
        HostTensor {
            shape,
            dtype: t.dtype,
            data,
        }
    }

    /// `t` as a checkpoint holds it ([`ParamSpec::file_shape`], or already the
    /// full shape) with zero padding rows appended; [`Error::Shape`] for any
    /// other shape.
    pub fn pad(&self, t: &HostTensor) -> Result<HostTensor> {
        if t.shape == self.shape {
            return Ok(t.clone());
        }
        if t.shape != self.file_shape() {
            return Err(Error::shape(
                "parameter",
                format!(
                    "{} is {}, expected {}",
                    self.name,
                    t.shape,
                    self.file_shape()
                ),
            ));
        }
        let mut data = t.data.clone();
        data.resize(self.shape.byte_size(t.dtype) as usize, 0);
        Ok(HostTensor {
            shape: self.shape.clone(),
            dtype: t.dtype,
            data,
        })
    }

    /// Matrices get weight decay; biases and norm gains do not (GPT-2 practice).
    pub fn decays(&self) -> bool {
        self.shape.rank() >= 2
    }
}

impl<M: Model + ?Sized> Model for &M {
    fn param_specs(&self) -> Vec<ParamSpec> {
        (**self).param_specs()
    }
    fn inputs(&self, seq: usize) -> Vec<InputSpec> {
        (**self).inputs(seq)
    }
    fn objective(&self, g: &mut Graph, inputs: &[Value]) -> Result<Objective> {
        (**self).objective(g, inputs)
    }
    fn outputs(&self, g: &mut Graph, inputs: &[Value]) -> Result<Vec<(String, Value)>> {
        (**self).outputs(g, inputs)
    }
    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value> {
        (**self).forward(g, tokens)
    }
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }
    fn block_size(&self) -> usize {
        (**self).block_size()
    }
    fn describe(&self) -> serde_json::Value {
        (**self).describe()
    }
}

/// One input a model declares: its name (the [`Batch`](crate::data::Batch)
/// key), dtype, and the shape of one example (the batch dimension, which
/// comes first and which micro-batching cuts, is left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// The name the batch holds it under and the graph records it as.
    pub name: String,
    /// Element type (`i32` for ids, `f32` for features).
    pub dtype: DType,
    /// One example's shape: `[T]` for a sequence of ids, `[D]` for features.
    pub shape: Vec<usize>,
    /// Read only by the loss (targets, labels): inference graphs leave it out.
    pub loss_only: bool,
}

impl InputSpec {
    /// An input the model's forward pass reads.
    pub fn new(name: &str, dtype: DType, shape: &[usize]) -> InputSpec {
        InputSpec {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            loss_only: false,
        }
    }
    /// An input only the loss reads (targets, labels).
    pub fn target(name: &str, dtype: DType, shape: &[usize]) -> InputSpec {
        InputSpec {
            loss_only: true,
            ..InputSpec::new(name, dtype, shape)
        }
    }
}

/// A language model's inputs for sequences of `seq`: `tokens [T] i32` and
/// `targets [T] i32` (the next token of each position).
pub fn token_inputs(seq: usize) -> Vec<InputSpec> {
    vec![
        InputSpec::new("tokens", DType::I32, &[seq]),
        InputSpec::target("targets", DType::I32, &[seq]),
    ]
}

/// What a training graph minimises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    /// A scalar the model recorded: the mean over the micro-batch's examples
    /// (gradient accumulation weighs each micro-batch by its share of the
    /// batch, so a sum would grow with the micro-batch).
    Loss(Value),
    /// Mean cross-entropy of `logits [.., L]` against `targets [..] i32` over
    /// the first `classes` columns. The loss and `dlogits` are one fused node
    /// of the backward pass: the logits are read once and `dlogits` takes
    /// their memory, the largest activation of a language model.
    CrossEntropy {
        /// `[.., L]`, `L ≥ classes` (vocabulary padding is masked out).
        logits: Value,
        /// `[..] i32`, each below `classes`.
        targets: Value,
        /// Real classes.
        classes: usize,
    },
}

/// A model the trainer can run. It declares its parameters and its inputs,
/// and records a graph from those inputs to an [`Objective`]; the trainer
/// plans, micro-batches (along each input's first dimension), autocasts,
/// recomputes, recovers and checkpoints any such model the same way.
///
/// A language model implements [`Model::forward`] (`tokens` → logits),
/// [`Model::vocab_size`] and [`Model::block_size`], and the defaults make it
/// next-token prediction. Any other model implements [`Model::inputs`],
/// [`Model::objective`] and [`Model::outputs`] (see `examples/regression.rs`).
pub trait Model {
    /// Every parameter of the model, each once (a tied weight once), with its
    /// shape and initialisation.
    fn param_specs(&self) -> Vec<ParamSpec>;
    /// The inputs of one example for sequences of `seq` (1 for a model
    /// without sequences); a language model's [`token_inputs`] by default.
    fn inputs(&self, seq: usize) -> Vec<InputSpec> {
        token_inputs(seq)
    }
    /// Records what training minimises from `inputs` (one value per
    /// [`Model::inputs`] entry, in its order, each `[mb, ..]`). By default,
    /// next-token cross-entropy of [`Model::forward`]'s logits.
    fn objective(&self, g: &mut Graph, inputs: &[Value]) -> Result<Objective> {
        let [tokens, targets] = two(inputs)?;
        let logits = self.forward(g, tokens)?;
        Ok(Objective::CrossEntropy {
            logits,
            targets,
            classes: self.vocab_size(),
        })
    }
    /// Records the named outputs of inference from the inputs that are not
    /// [`InputSpec::loss_only`], in [`Model::inputs`] order. By default
    /// `logits [mb, T, V]`, in f32, the vocabulary padding cut off.
    fn outputs(&self, g: &mut Graph, inputs: &[Value]) -> Result<Vec<(String, Value)>> {
        let tokens = *inputs
            .first()
            .ok_or_else(|| Error::shape("model", "a language model reads `tokens`"))?;
        let mut logits = self.forward(g, tokens)?;
        let classes = self.vocab_size();
        let width = g.shape(logits).last();
        if width > classes {
            let last = g.shape(logits).rank() - 1;
            logits = g.split(logits, last, &[classes, width - classes])?[0];
        }
        if g.dtype(logits) != DType::F32 {
            logits = g.cast(logits, DType::F32)?;
        }
        Ok(vec![("logits".to_string(), logits)])
    }
    /// A language model: `tokens [B, T] i32` → `logits [B, T, L]`, `L` at
    /// least [`Model::vocab_size`]: logits past the vocabulary (padding for
    /// the GEMM) are masked out of the loss and never sampled. Other models
    /// need not implement it.
    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value> {
        let _ = (g, tokens);
        Err(Error::invalid(
            "model",
            "this model has no token forward pass (it is not a language model); it implements Model::objective and Model::outputs",
        ))
    }
    /// Number of token ids the model takes, and of classes its logits score
    /// (0 for a model without tokens).
    fn vocab_size(&self) -> usize {
        0
    }
    /// The longest sequence the model accepts.
    fn block_size(&self) -> usize {
        1
    }
    /// The model's configuration, saved in checkpoints and compared on resume.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// `T` of `tokens [B, T]`; [`Error::InvalidArgument`] past a context of
/// `block_size`.
pub(crate) fn sequence_length(g: &Graph, tokens: Value, block_size: usize) -> Result<usize> {
    let t = *g.shape(tokens).dims().get(1).ok_or_else(|| {
        Error::shape(
            "model",
            format!("tokens must be [B, T], got {}", g.shape(tokens)),
        )
    })?;
    if t > block_size {
        return Err(Error::invalid(
            "sequence length",
            format!(
                "{t} tokens exceed the model's context of {block_size}; lower TrainConfig::seq_len"
            ),
        ));
    }
    Ok(t)
}

/// The two values of a language model's inputs (tokens, targets).
fn two(inputs: &[Value]) -> Result<[Value; 2]> {
    match inputs {
        [a, b] => Ok([*a, *b]),
        _ => Err(Error::shape(
            "model",
            format!(
                "a language model's objective reads tokens and targets, got {} inputs",
                inputs.len()
            ),
        )),
    }
}
