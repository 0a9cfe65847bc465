//! The Llama family: RMSNorm, rotary positions, SwiGLU, grouped-query
//! attention, no biases, an output head of its own (or tied, as SmolLM's
//! small models are). Weights keep Hugging Face's `nn.Linear` layout
//! (`[out, in]`, applied as `x @ Wᵀ`), so a checkpoint maps onto them with
//! no transposes; q, k and v are one `[(H + 2K)·D, C]` projection, the rows
//! of `q_proj`, `k_proj` and `v_proj` stacked.

use serde::{Deserialize, Serialize};

use super::{Init, Model, ParamSpec, VOCAB_ALIGN};
use crate::error::{Error, Result};
use crate::graph::{Graph, Value};

/// The sizes of a Llama-style model; [`LlamaConfig::preset`] gives the named
/// ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Context length (`max_position_embeddings`).
    pub block_size: usize,
    /// Number of decoder layers.
    pub n_layer: usize,
    /// Query heads `H`.
    pub n_head: usize,
    /// Key/value heads `K`, dividing `H` (grouped-query attention).
    pub n_kv_head: usize,
    /// Width `C` of the residual stream; `H` divides it.
    pub n_embd: usize,
    /// Width of the SwiGLU MLP (`intermediate_size`).
    pub intermediate: usize,
    /// RoPE's frequency base.
    pub rope_theta: f64,
    /// RMSNorm's epsilon.
    pub norm_eps: f64,
    /// The output head is the token embedding.
    pub tie_embeddings: bool,
}

/// Llama preset names `--model` accepts.
pub const LLAMA_PRESETS: &[&str] = &["llama-tiny", "smollm-135m", "tinyllama-1.1b"];

impl LlamaConfig {
    /// A byte-level Llama the size of the tiny GPT: 4 layers of width 64,
    /// 4 query heads sharing 2 key/value heads. Learns the bundled text on
    /// two cpu cores in about a minute.
    pub fn tiny() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 256,
            block_size: 64,
            n_layer: 4,
            n_head: 4,
            n_kv_head: 2,
            n_embd: 64,
            intermediate: 176,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
        }
    }

    /// SmolLM-135M's shape: 30 layers of width 576, 9 heads, 3 KV heads,
    /// MLP 1536, vocabulary 49152, context 2048, tied embeddings.
    pub fn smollm_135m() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 49152,
            block_size: 2048,
            n_layer: 30,
            n_head: 9,
            n_kv_head: 3,
            n_embd: 576,
            intermediate: 1536,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tie_embeddings: true,
        }
    }

    /// TinyLlama-1.1B's shape: 22 layers of width 2048, 32 heads, 4 KV heads,
    /// MLP 5632, vocabulary 32000, context 2048.
    pub fn tinyllama_1_1b() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 32000,
            block_size: 2048,
            n_layer: 22,
            n_head: 32,
            n_kv_head: 4,
            n_embd: 2048,
            intermediate: 5632,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
        }
    }

    /// The config named `name`, one of [`LLAMA_PRESETS`].
    pub fn preset(name: &str) -> Option<LlamaConfig> {
        Some(match name {
            "llama-tiny" => Self::tiny(),
            "smollm-135m" => Self::smollm_135m(),
            "tinyllama-1.1b" => Self::tinyllama_1_1b(),
            _ => return None,
        })
    }

    /// Columns per head, `C / H`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The vocabulary rounded up to [`VOCAB_ALIGN`] for the logits GEMM, as
    /// GPT's is (padding rows start at zero and leave checkpoints).
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.next_multiple_of(VOCAB_ALIGN)
    }

    /// A peak learning rate that trains this size well with AdamW.
    pub fn default_lr(&self) -> f64 {
        if self.n_embd <= 128 {
            1e-2
        } else {
            3e-4
        }
    }

    /// [`Error::InvalidArgument`] unless every size is positive, `H` divides
    /// `C` into heads of an even width and `K` divides `H`.
    pub fn validate(&self) -> Result<()> {
        let ok = self.vocab_size > 0
            && self.block_size > 0
            && self.n_layer > 0
            && self.n_head > 0
            && self.n_kv_head > 0
            && self.intermediate > 0
            && self.n_embd % self.n_head == 0
            && self.head_dim() % 2 == 0
            && self.n_head % self.n_kv_head == 0
            && self.rope_theta > 0.0
            && self.norm_eps > 0.0;
        if !ok {
            return Err(Error::invalid(
                "model config",
                format!("{self:?}: sizes must be positive, n_embd / n_head even, n_kv_head dividing n_head"),
            ));
        }
        Ok(())
    }
}

/// A `[out, in]` projection without bias, applied as `x @ Wᵀ`.
struct Proj(ParamSpec); // [out, in]

impl Proj {
    fn new(name: String, d_in: usize, d_out: usize) -> Proj {
        Proj(ParamSpec::new(
            name,
            [d_out, d_in],
            Init::Normal { std: 0.02 },
        ))
    }
    /// `x [.., in]` → `[.., out]`.
    fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let w = self.0.record(g)?;
        g.matmul_t(x, w, false, true)
    }
}

/// RMSNorm with a gain `[C]` starting at 1.
struct RmsNorm(ParamSpec, f64);

impl RmsNorm {
    fn new(name: String, c: usize, eps: f64) -> RmsNorm {
        RmsNorm(ParamSpec::new(name, [c], Init::Ones), eps)
    }
    fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let w = self.0.record(g)?;
        g.rmsnorm(x, w, self.1)
    }
}

/// One decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
struct Layer {
    input_norm: RmsNorm,
    qkv: Proj, // C → (H + 2K)·D
    o: Proj,   // H·D → C
    post_norm: RmsNorm,
    gate: Proj, // C → F
    up: Proj,   // C → F
    down: Proj, // F → C
}

impl Layer {
    fn params(&self) -> Vec<ParamSpec> {
        [
            &self.input_norm.0,
            &self.qkv.0,
            &self.o.0,
            &self.post_norm.0,
            &self.gate.0,
            &self.up.0,
            &self.down.0,
        ]
        .into_iter()
        .cloned()
        .collect()
    }
}

/// A Llama-style decoder. It holds parameter specs only, no device memory.
pub struct Llama {
    /// The sizes it was built from.
    pub config: LlamaConfig,
    embed: ParamSpec, // [V padded, C]
    layers: Vec<Layer>,
    norm: RmsNorm,
    head: Option<ParamSpec>, // [V padded, C]; None when tied
}

impl Llama {
    /// The layers and parameter specs for `config` (normal(0, 0.02) init,
    /// gains 1, as Hugging Face's Llama starts). Fails as
    /// [`LlamaConfig::validate`] does.
    pub fn new(config: LlamaConfig) -> Result<Llama> {
        config.validate()?;
        let c = config.n_embd;
        let (h, k, d, f) = (
            config.n_head,
            config.n_kv_head,
            config.head_dim(),
            config.intermediate,
        );
        let eps = config.norm_eps;
        let layers = (0..config.n_layer)
            .map(|i| {
                let p = format!("layers.{i}");
                Layer {
                    input_norm: RmsNorm::new(format!("{p}.input_layernorm.weight"), c, eps),
                    qkv: Proj::new(format!("{p}.self_attn.qkv_proj.weight"), c, (h + 2 * k) * d),
                    o: Proj::new(format!("{p}.self_attn.o_proj.weight"), h * d, c),
                    post_norm: RmsNorm::new(format!("{p}.post_attention_layernorm.weight"), c, eps),
                    gate: Proj::new(format!("{p}.mlp.gate_proj.weight"), c, f),
                    up: Proj::new(format!("{p}.mlp.up_proj.weight"), c, f),
                    down: Proj::new(format!("{p}.mlp.down_proj.weight"), f, c),
                }
            })
            .collect();
        let vocab = |name: &str| {
            let mut s =
                ParamSpec::new(name, [config.padded_vocab(), c], Init::Normal { std: 0.02 });
            s.real_rows = (config.padded_vocab() > config.vocab_size).then_some(config.vocab_size);
            s
        };
        Ok(Llama {
            embed: vocab("embed_tokens.weight"),
            layers,
            norm: RmsNorm::new("norm.weight".into(), c, eps),
            head: (!config.tie_embeddings).then(|| vocab("lm_head.weight")),
            config,
        })
    }

    /// Number of trainable scalars, vocabulary padding left out.
    pub fn num_params(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|p| p.file_shape().numel())
            .sum()
    }
}

impl Model for Llama {
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut v = vec![self.embed.clone()];
        for l in &self.layers {
            v.extend(l.params());
        }
        v.push(self.norm.0.clone());
        v.extend(self.head.clone());
        v
    }

    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value> {
        super::sequence_length(g, tokens, self.config.block_size)?;
        let cfg = &self.config;
        let table = self.embed.record(g)?;
        let mut x = g.embedding(tokens, table)?; // [B, T, C]
        for (i, l) in self.layers.iter().enumerate() {
            g.set_block(Some(i as u32));
            let h = l.input_norm.forward(g, x)?;
            let qkv = l.qkv.forward(g, h)?; // [B, T, (H + 2K)·D]
            let qkv = g.rope(qkv, cfg.n_head, cfg.n_kv_head, cfg.rope_theta)?;
            let a = g.gqa_attention(qkv, cfg.n_head, cfg.n_kv_head)?; // [B, T, H·D]
            let a = l.o.forward(g, a)?;
            x = g.add(x, a)?;
            let h = l.post_norm.forward(g, x)?;
            let gate = l.gate.forward(g, h)?; // [B, T, F]
            let gate = g.silu(gate)?;
            let up = l.up.forward(g, h)?; // [B, T, F]
            let h = g.mul(gate, up)?; // SwiGLU
            let h = l.down.forward(g, h)?;
            x = g.add(x, h)?;
        }
        g.set_block(None);
        let x = self.norm.forward(g, x)?;
        let head = self.head.as_ref().unwrap_or(&self.embed).record(g)?;
        g.matmul_t(x, head, false, true) // [B, T, V padded]: the loss masks the padding
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn block_size(&self) -> usize {
        self.config.block_size
    }

    fn describe(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("family".into(), "llama".into());
        }
        v
    }
}
