//! The GPT-2 layers. Weights use GPT-2's layout (`Conv1D`: `[in, out]`), so a
//! checkpoint's tensors carry the names and shapes GPT-2 users know.

use super::{Init, ParamSpec};
use crate::error::Result;
use crate::graph::{Graph, Value};

pub const LN_EPS: f64 = 1e-5;

pub struct Linear {
    pub weight: ParamSpec,       // [in, out]
    pub bias: Option<ParamSpec>, // [out]
}

impl Linear {
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

pub struct LayerNorm {
    pub weight: ParamSpec, // [C]
    pub bias: ParamSpec,   // [C]
}

impl LayerNorm {
    pub fn new(name: &str, c: usize) -> LayerNorm {
        LayerNorm {
            weight: ParamSpec::new(format!("{name}.weight"), [c], Init::Ones),
            bias: ParamSpec::new(format!("{name}.bias"), [c], Init::Zeros),
        }
    }
    pub fn params(&self) -> Vec<ParamSpec> {
        vec![self.weight.clone(), self.bias.clone()]
    }
    pub fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let w = self.weight.record(g)?;
        let b = self.bias.record(g)?;
        g.layernorm(x, w, b, LN_EPS)
    }
}

pub struct Embedding {
    pub weight: ParamSpec, // [V, C]
}

impl Embedding {
    pub fn new(name: &str, v: usize, c: usize, std: f64) -> Embedding {
        Embedding {
            weight: ParamSpec::new(format!("{name}.weight"), [v, c], Init::Normal { std }),
        }
    }
    /// `ids [..] i32` → `[.., C]`.
    pub fn forward(&self, g: &mut Graph, ids: Value) -> Result<Value> {
        let w = self.weight.record(g)?;
        g.embedding(ids, w)
    }
}

pub struct CausalSelfAttention {
    pub c_attn: Linear, // C → 3C
    pub c_proj: Linear, // C → C
    pub n_head: usize,
}

impl CausalSelfAttention {
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

pub struct Mlp {
    pub c_fc: Linear,   // C → 4C
    pub c_proj: Linear, // 4C → C
}

impl Mlp {
    pub fn params(&self) -> Vec<ParamSpec> {
        [self.c_fc.params(), self.c_proj.params()].concat()
    }
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
    pub ln_1: LayerNorm,
    pub attn: CausalSelfAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    pub fn params(&self) -> Vec<ParamSpec> {
        [
            self.ln_1.params(),
            self.attn.params(),
            self.ln_2.params(),
            self.mlp.params(),
        ]
        .concat()
    }
    pub fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let h = self.ln_1.forward(g, x)?;
        let h = self.attn.forward(g, h)?;
        let x = g.add(x, h)?;
        let h = self.ln_2.forward(g, x)?;
        let h = self.mlp.forward(g, h)?;
        g.add(x, h)
    }
}
