//! Layers and the GPT model. A layer is ordinary Rust that records graph ops; it
//! declares its parameters as [`ParamSpec`]s and gets gradients from autodiff.

mod gpt;
mod layers;

pub use gpt::{Gpt, GptConfig, PRESETS};
pub use layers::{Block, CausalSelfAttention, Embedding, LayerNorm, Linear, Mlp};

use crate::error::Result;
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
}

impl ParamSpec {
    /// A spec named `name` of `shape`, initialised by `init`.
    pub fn new(name: impl Into<String>, shape: impl Into<Shape>, init: Init) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            shape: shape.into(),
            init,
        }
    }

    /// Records this parameter in the graph, in the graph's parameter dtype.
    pub fn record(&self, g: &mut Graph) -> Result<Value> {
        let dt = g.param_dtype();
        g.param(&self.name, self.shape.clone(), dt)
    }

    /// Draws the initial values.
    pub fn init_values(&self, rng: &mut Rng) -> HostTensor {
        let n = self.shape.numel();
        let v: Vec<f32> = match self.init {
            Init::Normal { std } => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
        };
        HostTensor::from_f32(self.shape.clone(), &v).expect("length matches shape")
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
    /// `tokens [B, T] i32` → `logits [B, T, vocab]`.
    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value>;
    /// Number of token ids the model takes, and of logits it gives per position.
    fn vocab_size(&self) -> usize;
    /// The longest sequence the model accepts.
    fn block_size(&self) -> usize;
    /// The model's configuration, saved in checkpoints and compared on resume.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
