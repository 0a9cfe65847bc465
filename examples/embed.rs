//! The smallest useful embedding: a model of your own — a bag-of-context MLP
//! with a custom gated layer written from graph ops — trained under a memory
//! budget. Its layer gets gradients, mixed precision and recompute without a
//! backward pass written by hand.
//!
//! cargo run --release --example embed [-- --smoke]

use headroom::data::Dataset;
use headroom::graph::{Graph, Value};
use headroom::memory::Budget;
use headroom::nn::{Init, Model, ParamSpec};
use headroom::{AdamW, Device, Result, TrainConfig, Trainer};

/// A GEGLU, y = (x W) ⊙ gelu(x V), written from graph ops only.
struct Geglu {
    w: ParamSpec,
    v: ParamSpec,
}

impl Geglu {
    fn new(name: &str, d_in: usize, d_out: usize) -> Geglu {
        let init = Init::Normal {
            std: 1.0 / (d_in as f64).sqrt(),
        };
        Geglu {
            w: ParamSpec::new(format!("{name}.w"), [d_in, d_out], init),
            v: ParamSpec::new(format!("{name}.v"), [d_in, d_out], init),
        }
    }
    fn forward(&self, g: &mut Graph, x: Value) -> Result<Value> {
        let (w, v) = (self.w.record(g)?, self.v.record(g)?);
        let a = g.matmul(x, w)?;
        let b = g.matmul(x, v)?;
        let b = g.gelu(b)?;
        g.mul(a, b)
    }
}

/// Next-byte prediction from each byte's embedding through two GEGLU layers.
struct TinyMlp {
    vocab: usize,
    ctx: usize,
    emb: ParamSpec,
    l1: Geglu,
    l2: Geglu,
    out: ParamSpec,
}

impl Model for TinyMlp {
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![
            self.emb.clone(),
            self.l1.w.clone(),
            self.l1.v.clone(),
            self.l2.w.clone(),
            self.l2.v.clone(),
            self.out.clone(),
        ]
    }
    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value> {
        let emb = self.emb.record(g)?;
        let x = g.embedding(tokens, emb)?; // [B, T, 64]
        g.set_block(Some(0)); // recompute policies may cut here
        let x = self.l1.forward(g, x)?;
        g.set_block(Some(1));
        let x = self.l2.forward(g, x)?;
        g.set_block(None);
        let out = self.out.record(g)?;
        g.matmul(x, out) // [B, T, vocab]
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn block_size(&self) -> usize {
        self.ctx
    }
}

fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let model = TinyMlp {
        vocab: 256,
        ctx: 64,
        emb: ParamSpec::new("emb", [256, 64], Init::Normal { std: 1.0 }),
        l1: Geglu::new("l1", 64, 128),
        l2: Geglu::new("l2", 128, 64),
        out: ParamSpec::new("out", [64, 256], Init::Normal { std: 0.125 }),
    };
    let mut device = Device::best()?;
    device.set_budget(Some(Budget::parse("16MiB")?));
    let steps = if smoke { 5 } else { 200 };
    let cfg = TrainConfig {
        batch: 32,
        seq_len: 64,
        steps,
        ..Default::default()
    };
    let mut trainer = Trainer::new(device, model, AdamW::new(3e-3), cfg)?;
    print!("{}", trainer.plan()?);
    let data = Dataset::bundled();
    for _ in 0..steps {
        let batch = trainer.next_batch(&data)?;
        let r = trainer.step(&batch)?;
        if r.step % 50 == 0 || r.step == steps {
            println!(
                "step {:>3}  loss {:.3}  grad norm {:.2e}  skipped {}",
                r.step, r.loss, r.grad_norm, r.skipped
            );
        }
    }
    print!("{}", trainer.memory_stats());
    Ok(())
}
