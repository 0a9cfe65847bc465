//! The smallest useful embedding: your own model (next-byte prediction through a
//! GEGLU layer written from graph ops) trained under a 16 MiB budget. The layer
//! gets gradients, mixed precision (`Auto`) and recompute without a hand-written
//! backward pass. `cargo run --release --example embed [-- --smoke]`
use headroom::graph::{Graph, Value};
use headroom::nn::{Init, Model, ParamSpec};
use headroom::{data::Dataset, memory::Budget, AdamW, Device, Result, TrainConfig, Trainer};

struct ByteGeglu(Vec<ParamSpec>); // emb [256, 64], w and v [64, 128], out [128, 256]

impl Model for ByteGeglu {
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.0.clone()
    }
    fn forward(&self, g: &mut Graph, tokens: Value) -> Result<Value> {
        let p: Vec<Value> = self.0.iter().map(|s| s.record(g)).collect::<Result<_>>()?;
        let x = g.embedding(tokens, p[0])?; // [B, T, 64]
        g.set_block(Some(0)); // a block the planner may recompute instead of keep
        let (a, b) = (g.matmul(x, p[1])?, g.matmul(x, p[2])?); // [B, T, 128] each
        let b = g.gelu(b)?;
        let h = g.mul(a, b)?; // GEGLU: a ⊙ gelu(b)
        g.set_block(None);
        g.matmul(h, p[3]) // logits [B, T, 256]
    }
    fn vocab_size(&self) -> usize {
        256
    }
    fn block_size(&self) -> usize {
        64
    }
}

fn main() -> Result<()> {
    let steps = if std::env::args().any(|a| a == "--smoke") {
        5
    } else {
        200
    };
    let p = |name: &str, shape: [usize; 2], std| ParamSpec::new(name, shape, Init::Normal { std });
    let model = ByteGeglu(vec![
        p("emb", [256, 64], 1.0),
        p("w", [64, 128], 0.125),
        p("v", [64, 128], 0.125),
        p("out", [128, 256], 0.09),
    ]);
    let mut device = Device::best()?;
    device.set_budget(Some(Budget::parse("16MiB")?));
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
                "step {:>3}  loss {:.3}  ({})",
                r.step,
                r.loss,
                trainer.precision()
            );
        }
    }
    print!("{}", trainer.memory_stats());
    Ok(())
}
