//! Evaluation and sampling: graphs that read the weights and change nothing.

use super::Trainer;
use crate::data::{Batch, Dataset, Split};
use crate::error::Result;
use crate::nn::Model;
use crate::rng::Rng;
use crate::schedule::run::Owned;
use crate::schedule::step::GraphKind;

impl<M: Model> Trainer<M> {
    /// Mean loss on one batch (in planned micro-batches) without touching any state.
    pub fn loss(&mut self, batch: &Batch) -> Result<f32> {
        self.check_batch(batch)?;
        let choice = self.ensure_plan(batch.batch, batch.seq)?;
        self.runner().mean_loss(batch, choice.micro_batch)
    }

    /// Mean validation loss over `eval_batches` batches that are the same at every
    /// evaluation (their own random stream), so evaluations compare.
    pub fn eval_loss(&mut self, data: &Dataset) -> Result<f64> {
        let mut rng = Rng::fork(self.cfg.seed, "eval");
        let mut sum = 0.0;
        for _ in 0..self.cfg.eval_batches {
            let b = data.batch(Split::Val, &mut rng, self.cfg.batch, self.cfg.seq_len)?;
            sum += self.loss(&b)? as f64;
        }
        Ok(sum / self.cfg.eval_batches as f64)
    }

    /// Samples `n` tokens after `prompt` at `temperature`.
    pub fn generate(
        &mut self,
        prompt: &[i32],
        n: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Result<Vec<i32>> {
        let t = self.model.block_size();
        let v = self.model.vocab_size();
        let mut ids: Vec<i32> = if prompt.is_empty() {
            vec![b'\n' as i32]
        } else {
            prompt.to_vec()
        };
        for _ in 0..n {
            let window = &ids[ids.len().saturating_sub(t)..];
            let last = window.len() - 1;
            // Causal attention: padding after the window cannot change its logits.
            let mut tokens = window.to_vec();
            tokens.resize(t, 0);
            let batch = Batch {
                batch: 1,
                seq: t,
                tokens,
                targets: vec![0; t],
            };
            let outs = Owned(
                self.runner()
                    .run(GraphKind::Logits, &batch, 1, None, 1.0, &[])?,
            );
            let logits = self.device.download(outs.0[0].view());
            outs.free(&mut self.device);
            let logits = logits?;
            // [1, T, width]: the step graph strips vocabulary padding to width
            // V; sampling reads the first V columns of a row whatever the
            // width, so a padding class can never be drawn.
            let width = logits.shape.last();
            let logits = logits.to_f64_vec();
            let row = &logits[last * width..last * width + v.min(width)];
            ids.push(sample(row, temperature, rng) as i32);
        }
        Ok(ids[ids.len() - n..].to_vec())
    }
}

fn sample(logits: &[f64], temperature: f64, rng: &mut Rng) -> usize {
    let temp = temperature.max(1e-6);
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = logits.iter().map(|&x| ((x - m) / temp).exp()).collect();
    let total: f64 = p.iter().sum();
    let mut r = rng.uniform() * total;
    for (i, &pi) in p.iter().enumerate() {
        r -= pi;
        if r <= 0.0 {
            return i;
        }
    }
    p.len() - 1
}
