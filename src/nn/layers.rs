//! The GPT-2 layers. Weights use GPT-2's layout (`Conv1D`: `[in, out]`), so a
//! checkpoint's tensors carry the names and shapes GPT-2 users know.

use super::{Init, ParamSpec};
use crate::error::Result;
use crate::graph::{Graph, Value};

/// The epsilon every [`LayerNorm`] adds to the variance (GPT-2's).
pub const LN_EPS: f64 = 1e-5;

/// A fully connected layer, `y = x @ weight + bias`.
pub struct Linear {
    /// `[in, out]`, normal init.
    pub weight: ParamSpec, // [in, out]
    /// `[out]`, zero init; `None` for a layer without bias.
    pub bias: Option<ParamSpec>, // [out]
}

impl Linear {
    /// A layer named `name` (parameters `{name}.weight` and, if `bias`,
    /// `{name}.bias`) from `d_in` to `d_out` features, its weight drawn with std `std`.
    pub fn new(name: &str, d_in: usize, d_out: usize, std: f64, bias: bool) -> Linear {
        Linear {
            weight: ParamSpec::new(
                format!("{name}.weight"),
                [d_in, d_out],
                Init::Normal { std },
            ),
            bias: bias.then(|| ParamSpec::new(format!("{name}.bias"), [d_out], Init::Zeros)),
        }
    }
    /// Its parameter specs: the weight, then the bias if any.
    pub fn params(&self) -> Vec<ParamSpec> {
        std::iter::once(self.weight.clone())
            .chain(self.bias.clone())
            .collect()
    }
    /// `x [.., in]` → `[.., out]`.
    pub fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let w = self.weight.record(g)?;
        let y = g.matmul(x, w)?;
        match &self.bias {
            Some(b) => {
                let b = b.record(g)?;
                g.add(y, b)
            }
            None => Ok(y),
        }
    }
}

/// LayerNorm over the last dim with a learned gain and shift.
pub struct LayerNorm {
    /// Gain `[C]`, starts at 1.
    pub weight: ParamSpec, // [C]
    /// Shift `[C]`, starts at 0.
    pub bias: ParamSpec, // [C]
}

impl LayerNorm {
    /// A LayerNorm named `name` (parameters `{name}.weight`, `{name}.bias`) over `c`
    /// features.
    pub fn new(name: &str, c: usize) -> LayerNorm {
        LayerNorm {
            weight: ParamSpec::new(format!("{name}.weight"), [c], Init::Ones),
            bias: ParamSpec::new(format!("{name}.bias"), [c], Init::Zeros),
        }
    }
    /// Its parameter specs: weight, then bias.
    pub fn params(&self) -> Vec<ParamSpec> {
        vec![self.weight.clone(), self.bias.clone()]
    }
    /// `x [.., C]` → `[.., C]`, with epsilon `LN_EPS` (1e-5).
    pub fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let w = self.weight.record(g)?;
        let b = self.bias.record(g)?;
        g.layernorm(x, w, b, LN_EPS)
    }
}

/// A learned lookup table, one row of `C` features per id.
pub struct Embedding {
    /// The table `[V, C]`, normal init.
    pub weight: ParamSpec, // [V, C]
}

impl Embedding {
    /// A table named `name` (parameter `{name}.weight`) of `v` rows of `c` features,
    /// drawn with std `std`.
    pub fn new(name: &str, v: usize, c: usize, std: f64) -> Embedding {
        Embedding {
            weight: ParamSpec::new(format!("{name}.weight"), [v, c], Init::Normal { std }),
        }
    }
    /// A table of `v` rows padded with zero rows to `padded` (see
    /// [`GptConfig::padded_vocab`](super::GptConfig::padded_vocab)): the padding
    /// starts at zero and checkpoints hold the first `v` rows only.
    pub fn padded(name: &str, v: usize, padded: usize, c: usize, std: f64) -> Embedding {
        let mut e = Embedding::new(name, padded, c, std);
        e.weight.real_rows = (padded > v).then_some(v);
        e
    }
    /// `ids [..] i32` → `[.., C]`.
    pub fn forward(&self, g: &mut Graph, ids: Value) -> Result<Value> {
        let w = self.weight.record(g)?;
        g.embedding(ids, w)
    }
}

/// Multi-head causal self-attention: `c_attn` projects to `qkv`, the fused
/// [`Graph::attention`] op mixes positions, `c_proj` projects back.
pub struct CausalSelfAttention {
    /// `C` → `3C`: q, k and v side by side.
    pub c_attn: Linear, // C → 3C
    /// `C` → `C`, back into the residual stream.
    pub c_proj: Linear, // C → C
    /// Number of heads; `C` must divide by it.
    pub n_head: usize,
}

impl CausalSelfAttention {
    /// Its parameter specs: `c_attn`'s, then `c_proj`'s.
    pub fn params(&self) -> Vec<ParamSpec> {
        [self.c_attn.params(), self.c_proj.params()].concat()
    }
    /// `x [B, T, C]` → `[B, T, C]`.
    pub fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let qkv = self.c_attn.forward(g, x)?; // [B, T, 3C]
        let y = g.attention(qkv, self.n_head)?; // [B, T, C]
        self.c_proj.forward(g, y)
    }
}

/// The feed-forward sublayer: `c_proj(gelu(c_fc(x)))`, `C` → `4C` → `C`.
pub struct Mlp {
    /// `C` → `4C`; its bias add is fused with the GELU.
    pub c_fc: Linear, // C → 4C
    /// `4C` → `C`, back into the residual stream.
    pub c_proj: Linear, // 4C → C
}

impl Mlp {
    /// Its parameter specs: `c_fc`'s, then `c_proj`'s.
    pub fn params(&self) -> Vec<ParamSpec> {
        [self.c_fc.params(), self.c_proj.params()].concat()
    }
    /// `x [.., C]` → `[.., C]`. With a `c_fc` bias, the bias add and the GELU are one
    /// [`Graph::bias_gelu`] op; without, a plain [`Graph::gelu`].
    pub fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        // c_fc's bias add and the GELU run as one fused op.
        let w = self.c_fc.weight.record(g)?;
        let h = g.matmul(x, w)?; // [B, T, 4C]
        let h = match &self.c_fc.bias {
            Some(b) => {
                let b = b.record(g)?;
                g.bias_gelu(h, b)?
            }
            None => g.gelu(h)?,
        };
        self.c_proj.forward(g, h)
    }
}

/// Pre-norm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
pub struct Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// The attention sublayer.
    pub attn: CausalSelfAttention,
    /// Norm before the MLP.
    pub ln_2: LayerNorm,
    /// The MLP sublayer.
    pub mlp: Mlp,
}

impl Block {
    /// Its parameter specs: `ln_1`, `attn`, `ln_2`, then `mlp`.
    pub fn params(&self) -> Vec<ParamSpec> {
        [
            self.ln_1.params(),
            self.attn.params(),
            self.ln_2.params(),
            self.mlp.params(),
        ]
        .concat()
    }
    /// `x [B, T, C]` → `[B, T, C]`.
    pub fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let h = self.ln_1.forward(g, x)?;
        let h = self.attn.forward(g, h)?;
        let x = g.add(x, h)?;
        let h = self.ln_2.forward(g, x)?;
        let h = self.mlp.forward(g, h)?;
        g.add(x, h)
    }
}
