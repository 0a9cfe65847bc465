//! Layers and the GPT model. A layer is ordinary Rust that records graph ops; it
//! declares its parameters as [`ParamSpec`]s and gets gradients from autodiff.

mod gpt;
mod layers;

pub use gpt::{Gpt, GptConfig, PRESETS, VOCAB_ALIGN};
pub use layers::{Block, CausalSelfAttention, Embedding, LayerNorm, Linear, Mlp};

use crate::error::{Error, Result};
use crate::graph::{Graph, Value};
use crate::rng::Rng;
use crate::tensor::{HostTensor, Shape};

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

/// A language model the trainer can run: token ids in, logits out.
pub trait Model {
    /// Every parameter of the model, each once (a tied weight once), with its
    /// shape and initialisation.
    fn param_specs(&self) -> Vec<ParamSpec>;
    /// `tokens [B, T] i32` → `logits [B, T, L]`, `L` at least
    /// [`Model::vocab_size`]: logits past the vocabulary (padding for the GEMM)
    /// are masked out of the loss and never sampled.
    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value>;
    /// Number of token ids the model takes, and of classes its logits score.
    fn vocab_size(&self) -> usize;
    /// The longest sequence the model accepts.
    fn block_size(&self) -> usize;
    /// The model's configuration, saved in checkpoints and compared on resume.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
