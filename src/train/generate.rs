//! Evaluation and sampling: graphs that read the weights and change nothing.

use super::Trainer;
use crate::data::{Batch, Dataset, Split};
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::rng::Rng;
use crate::schedule::run::Owned;
use crate::schedule::step::{GraphKey, GraphKind};
use crate::tensor::HostTensor;

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

    /// The model's named outputs ([`Model::outputs`]) for every example of
    /// `batch`, forward only: no gradient is allocated, and the batch runs in
    /// the largest micro-batch whose simulated peak, next to the weights
    /// already placed, fits the budget. Each output is `[B, ..]`, the
    /// micro-batches' parts joined along the first dimension. The batch may
    /// leave out the loss-only inputs (targets).
    pub fn infer(&mut self, batch: &Batch) -> Result<Vec<(String, HostTensor)>> {
        let specs: Vec<_> = self
            .model
            .inputs(batch.seq)
            .into_iter()
            .filter(|s| !s.loss_only || batch.input(&s.name).is_some())
            .collect();
        batch.check_inputs(&specs)?;
        let mb = self.inference_micro_batch(batch.batch, batch.seq)?;
        let mut joined: Vec<(String, HostTensor)> = Vec::new();
        for start in (0..batch.batch).step_by(mb) {
            let sub = batch.slice(start, mb);
            let outs =
                Owned(
                    self.runner()
                        .run(GraphKind::Infer, &sub, batch.batch, None, 1.0, &[])?,
                );
            let got: Result<Vec<HostTensor>> = outs
                .0
                .iter()
                .map(|t| self.device.download(t.view()))
                .collect();
            outs.free(&mut self.device);
            let key = GraphKey {
                kind: GraphKind::Infer,
                micro_batch: mb,
                seq: batch.seq,
            };
            let graph = self.compiler.graph(&self.model, key)?;
            for (i, h) in got?.into_iter().enumerate() {
                match joined.get_mut(i) {
                    Some((_, all)) => {
                        all.shape.0[0] += h.shape.dims()[0];
                        all.data.extend(h.data);
                    }
                    None => joined.push((graph.outputs[i].0.clone(), h)),
                }
            }
        }
        Ok(joined)
    }

    /// The largest micro-batch dividing `batch` whose inference program fits
    /// the budget beside the model state, by simulation (the same program
    /// and allocator as the run).
    fn inference_micro_batch(&mut self, batch: usize, seq: usize) -> Result<usize> {
        if let Some(&(b, t, mb)) = self.inference_plan.as_ref() {
            if (b, t) == (batch, seq) {
                return Ok(mb);
            }
        }
        let budget = self.plan_budget();
        let mb = crate::schedule::simulate::inference_micro_batch(
            &mut self.compiler,
            &self.model,
            &self.cfg,
            &self.state,
            batch,
            seq,
            budget,
        )?;
        self.inference_plan = Some((batch, seq, mb));
        Ok(mb)
    }

    /// `n` tokens after `prompt`, each drawn from the softmax of the last
    /// position's logits at `temperature`, or the most likely one (greedy
    /// decoding) at temperature 0. An empty prompt starts from a newline.
    pub fn generate(
        &mut self,
        prompt: &[i32],
        n: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Result<Vec<i32>> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(Error::invalid(
                "temperature",
                format!("{temperature}: use 0 for greedy decoding or a positive number"),
            ));
        }
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
            let tokens = HostTensor::from_i32([1, t], &tokens)?;
            let batch = Batch::new(1, t, vec![("tokens".into(), tokens)]);
            let outs = Owned(
                self.runner()
                    .run(GraphKind::Infer, &batch, 1, None, 1.0, &[])?,
            );
            let logits = self.device.download(outs.0[0].view());
            outs.free(&mut self.device);
            let logits = logits?;
            // [1, T, width]: the inference graph strips vocabulary padding to
            // width V; sampling reads the first V columns of a row whatever
            // the width, so a padding class can never be drawn.
            let width = logits.shape.last();
            let logits = logits.to_f64_vec();
            let row = &logits[last * width..last * width + v.min(width)];
            let next = match temperature == 0.0 {
                true => argmax(row),
                false => sample(row, temperature, rng),
            };
            ids.push(next as i32);
        }
        Ok(ids[ids.len() - n..].to_vec())
    }
}

/// The index of the largest logit (the first of equal ones).
fn argmax(logits: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best
}

fn sample(logits: &[f64], temperature: f64, rng: &mut Rng) -> usize {
    let temp = temperature;
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
