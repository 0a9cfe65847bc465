//! GPT-2: learned positions, pre-norm blocks, GELU (tanh), tied input/output
//! embeddings. Readable in one sitting, like nanoGPT.

use serde::{Deserialize, Serialize};

use super::layers::{Block, CausalSelfAttention, Embedding, LayerNorm, Linear, Mlp};
use super::{Model, ParamSpec};
use crate::error::{Error, Result};
use crate::graph::{Graph, Value};

/// The sizes of a GPT-2 style model; [`GptConfig::preset`] gives the named ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Number of token ids (256 for the byte tokenizer, 50257 for GPT-2's BPE).
    pub vocab_size: usize,
    /// Context length (GPT-2's `n_ctx`).
    pub block_size: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// Width `C` of the residual stream.
    pub n_embd: usize,
}

/// What [`GptConfig::padded_vocab`] rounds the vocabulary up to.
pub const VOCAB_ALIGN: usize = 128;

/// Preset names `--model` accepts.
pub const PRESETS: &[&str] = &["tiny", "gpt2-124m", "gpt2-350m", "gpt2-774m", "gpt2-1558m"];

impl GptConfig {
    /// The default: a byte-level model of about 0.2M parameters that learns
    /// Shakespeare's spelling in under a minute on two cpu cores.
    pub fn tiny() -> GptConfig {
        GptConfig {
            vocab_size: 256,
            block_size: 64,
            n_layer: 4,
            n_head: 4,
            n_embd: 64,
        }
    }
    fn gpt2(n_layer: usize, n_head: usize, n_embd: usize) -> GptConfig {
        GptConfig {
            vocab_size: 50257,
            block_size: 1024,
            n_layer,
            n_head,
            n_embd,
        }
    }
    /// GPT-2 small: 12 layers, 12 heads, width 768 (vocab 50257, context 1024).
    pub fn gpt2_124m() -> GptConfig {
        Self::gpt2(12, 12, 768)
    }
    /// GPT-2 medium: 24 layers, 16 heads, width 1024 (vocab 50257, context 1024).
    pub fn gpt2_350m() -> GptConfig {
        Self::gpt2(24, 16, 1024)
    }
    /// GPT-2 large: 36 layers, 20 heads, width 1280 (vocab 50257, context 1024).
    pub fn gpt2_774m() -> GptConfig {
        Self::gpt2(36, 20, 1280)
    }
    /// GPT-2 XL: 48 layers, 25 heads, width 1600 (vocab 50257, context 1024).
    pub fn gpt2_1558m() -> GptConfig {
        Self::gpt2(48, 25, 1600)
    }

    /// The config named `name`, one of [`PRESETS`]; [`Error::UnknownPreset`]
    /// otherwise.
    pub fn preset(name: &str) -> Result<GptConfig> {
        Ok(match name {
            "tiny" => Self::tiny(),
            "gpt2-124m" => Self::gpt2_124m(),
            "gpt2-350m" => Self::gpt2_350m(),
            "gpt2-774m" => Self::gpt2_774m(),
            "gpt2-1558m" => Self::gpt2_1558m(),
            _ => {
                return Err(Error::UnknownPreset {
                    name: name.to_string(),
                    known: PRESETS.join(", "),
                })
            }
        })
    }

    /// Rows of the token embedding and columns of the logits: the vocabulary
    /// rounded up to a multiple of [`VOCAB_ALIGN`] (50257 → 50304), so the
    /// logits GEMM gets tensor-core-friendly sizes. The padding rows start at
    /// zero, the loss masks their logits out (zero gradient, so AdamW keeps them
    /// zero, weight decay included), sampling never draws them and checkpoints
    /// leave them out. A vocabulary already aligned (tiny's 256) is unchanged.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.next_multiple_of(VOCAB_ALIGN)
    }

    /// A peak learning rate that trains this size well with AdamW.
    pub fn default_lr(&self) -> f64 {
        if self.n_embd <= 128 {
            1e-2
        } else {
            6e-4
        }
    }

    /// [`Error::InvalidArgument`] unless every size is positive and `n_embd` is a
    /// multiple of `n_head`.
    pub fn validate(&self) -> Result<()> {
        let ok = self.vocab_size > 0
            && self.block_size > 0
            && self.n_layer > 0
            && self.n_head > 0
            && self.n_embd > 0
            && self.n_embd % self.n_head == 0;
        if !ok {
            return Err(Error::invalid(
                "model config",
                format!("{self:?}: all sizes must be positive and n_embd divisible by n_head"),
            ));
        }
        Ok(())
    }
}

/// GPT-2: token and position embeddings, `n_layer` pre-norm [`Block`]s, a final
/// LayerNorm, and logits through the token embedding (tied). It holds parameter
/// specs only, no device memory.
pub struct Gpt {
    /// The sizes it was built from.
    pub config: GptConfig,
    wte: Embedding, // [V padded, C], also the output projection (tied)
    wpe: Embedding, // [block_size, C]
    h: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt {
    /// The layers and parameter specs for `config`, with GPT-2's initialisation:
    /// std 0.02 (0.01 for positions), the projections into the residual stream
    /// scaled by `1/√(2·n_layer)`. Fails as [`GptConfig::validate`] does.
    pub fn new(config: GptConfig) -> Result<Gpt> {
        config.validate()?;
        let GptConfig {
            vocab_size: v,
            block_size,
            n_layer,
            n_head,
            n_embd: c,
        } = config;
        let std = 0.02;
        // GPT-2 scales the init of the projections into the residual stream so its
        // variance does not grow with depth.
        let proj_std = std / (2.0 * n_layer as f64).sqrt();
        let h = (0..n_layer)
            .map(|i| {
                let p = format!("h.{i}");
                Block {
                    ln_1: LayerNorm::new(&format!("{p}.ln_1"), c),
                    attn: CausalSelfAttention {
                        c_attn: Linear::new(&format!("{p}.attn.c_attn"), c, 3 * c, std, true),
                        c_proj: Linear::new(&format!("{p}.attn.c_proj"), c, c, proj_std, true),
                        n_head,
                    },
                    ln_2: LayerNorm::new(&format!("{p}.ln_2"), c),
                    mlp: Mlp {
                        c_fc: Linear::new(&format!("{p}.mlp.c_fc"), c, 4 * c, std, true),
                        c_proj: Linear::new(&format!("{p}.mlp.c_proj"), 4 * c, c, proj_std, true),
                    },
                }
            })
            .collect();
        Ok(Gpt {
            wte: Embedding::padded("wte", v, config.padded_vocab(), c, std),
            wpe: Embedding::new("wpe", block_size, c, 0.01),
            h,
            ln_f: LayerNorm::new("ln_f", c),
            config,
        })
    }

    /// Number of trainable scalars, the tied embedding counted once and its
    /// vocabulary padding not at all (GPT-2 124M: 124,439,808).
    pub fn num_params(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|p| p.file_shape().numel())
            .sum()
    }
}

impl Model for Gpt {
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut v = vec![self.wte.weight.clone(), self.wpe.weight.clone()];
        for b in &self.h {
            v.extend(b.params());
        }
        v.extend(self.ln_f.params());
        v
    }

    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value> {
        let t = super::sequence_length(g, tokens, self.config.block_size)?;
        let tok = self.wte.forward(g, tokens)?; // [B, T, C]
        let wpe = self.wpe.weight.record(g)?; // [block_size, C]
        let pos = if t == self.config.block_size {
            wpe
        } else {
            g.split(wpe, 0, &[t, self.config.block_size - t])?[0] // [T, C]
        };
        let mut x = g.add(tok, pos)?; // [B, T, C]
        for (i, b) in self.h.iter().enumerate() {
            g.set_block(Some(i as u32));
            x = b.forward(g, x)?;
        }
        g.set_block(None);
        let x = self.ln_f.forward(g, x)?;
        let wte = self.wte.weight.record(g)?;
        g.matmul_t(x, wte, false, true) // [B, T, V padded]: the loss masks the padding
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn block_size(&self) -> usize {
        self.config.block_size
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null)
    }
}
