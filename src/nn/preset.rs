//! One name space for every built-in model: `--model` presets of both
//! families, and the model a checkpoint describes.

use super::{Gpt, GptConfig, InputSpec, Llama, LlamaConfig, Model, Objective, ParamSpec};
use super::{LLAMA_PRESETS, PRESETS};
use crate::error::{Error, Result};
use crate::graph::{Graph, Value};

/// A built-in model's sizes: GPT-2 or Llama.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    /// GPT-2: learned positions, LayerNorm, GELU, tied head.
    Gpt(GptConfig),
    /// Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention.
    Llama(LlamaConfig),
}

impl ModelConfig {
    /// The preset named `name` of either family; [`Error::UnknownPreset`]
    /// listing them all otherwise.
    pub fn preset(name: &str) -> Result<ModelConfig> {
        if let Some(c) = LlamaConfig::preset(name) {
            return Ok(ModelConfig::Llama(c));
        }
        GptConfig::preset(name)
            .map(ModelConfig::Gpt)
            .map_err(|_| Error::UnknownPreset {
                name: name.to_string(),
                known: all_presets().join(", "),
            })
    }

    /// The model a checkpoint's description ([`Model::describe`]) names:
    /// Llama's carry `"family": "llama"`, GPT's (from before families) not.
    pub fn from_description(v: &serde_json::Value) -> std::result::Result<ModelConfig, String> {
        let family = v.get("family").and_then(|f| f.as_str());
        match family {
            Some("llama") => serde_json::from_value(v.clone())
                .map(ModelConfig::Llama)
                .map_err(|e| e.to_string()),
            None | Some("gpt2") => serde_json::from_value(v.clone())
                .map(ModelConfig::Gpt)
                .map_err(|e| e.to_string()),
            Some(f) => Err(format!("model family {f} is not one this build knows")),
        }
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Gpt(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }

    /// Sets the vocabulary (to a tokenizer's), checking the config again.
    pub fn set_vocab_size(&mut self, v: usize) -> Result<()> {
        match self {
            ModelConfig::Gpt(c) => {
                c.vocab_size = v;
                c.validate()
            }
            ModelConfig::Llama(c) => {
                c.vocab_size = v;
                c.validate()
            }
        }
    }

    /// The longest sequence.
    pub fn block_size(&self) -> usize {
        match self {
            ModelConfig::Gpt(c) => c.block_size,
            ModelConfig::Llama(c) => c.block_size,
        }
    }

    /// A peak learning rate that trains this size well with AdamW.
    pub fn default_lr(&self) -> f64 {
        match self {
            ModelConfig::Gpt(c) => c.default_lr(),
            ModelConfig::Llama(c) => c.default_lr(),
        }
    }

    /// The model's layers and parameter specs.
    pub fn build(&self) -> Result<AnyModel> {
        Ok(match self {
            ModelConfig::Gpt(c) => AnyModel::Gpt(Gpt::new(c.clone())?),
            ModelConfig::Llama(c) => AnyModel::Llama(Llama::new(c.clone())?),
        })
    }
}

/// Every preset name, GPT's then Llama's.
pub fn all_presets() -> Vec<&'static str> {
    PRESETS.iter().chain(LLAMA_PRESETS).copied().collect()
}

/// A built-in model of either family.
pub enum AnyModel {
    /// GPT-2.
    Gpt(Gpt),
    /// Llama.
    Llama(Llama),
}

impl AnyModel {
    fn inner(&self) -> &dyn Model {
        match self {
            AnyModel::Gpt(m) => m,
            AnyModel::Llama(m) => m,
        }
    }

    /// Number of trainable scalars (tied weights once, padding not at all).
    pub fn num_params(&self) -> usize {
        match self {
            AnyModel::Gpt(m) => m.num_params(),
            AnyModel::Llama(m) => m.num_params(),
        }
    }

    /// Its sizes.
    pub fn config(&self) -> ModelConfig {
        match self {
            AnyModel::Gpt(m) => ModelConfig::Gpt(m.config.clone()),
            AnyModel::Llama(m) => ModelConfig::Llama(m.config.clone()),
        }
    }
}

impl Model for AnyModel {
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.inner().param_specs()
    }
    fn inputs(&self, seq: usize) -> Vec<InputSpec> {
        self.inner().inputs(seq)
    }
    fn objective(&self, g: &mut Graph, inputs: &[Value]) -> Result<Objective> {
        self.inner().objective(g, inputs)
    }
    fn outputs(&self, g: &mut Graph, inputs: &[Value]) -> Result<Vec<(String, Value)>> {
        self.inner().outputs(g, inputs)
    }
    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value> {
        self.inner().forward(g, tokens)
    }
    fn vocab_size(&self) -> usize {
        self.inner().vocab_size()
    }
    fn block_size(&self) -> usize {
        self.inner().block_size()
    }
    fn describe(&self) -> serde_json::Value {
        self.inner().describe()
    }
}
