//! Checkpoints: the whole training state saved atomically, and restored
//! after checking it was made for this model, precision and parameters.

use std::collections::HashMap;
use std::path::Path;

use super::Trainer;
use crate::checkpoint::{self, Checkpoint, Manifest, TrainState};
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::rng::Rng;
use crate::schedule::planner::{self, Choice};
use crate::schedule::state::SavedMoments;
use crate::tensor::HostTensor;

impl<M: Model> Trainer<M> {
    /// Saves the whole training state at `path` (a directory, written
    /// atomically): weights, AdamW moments, step, LR schedule, loss scaler,
    /// sampler state and plan.
    pub fn save_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        // GPT-2-shaped files: padding rows (zero, see ParamSpec::real_rows) stay out.
        let specs: Vec<_> = self.state.params.iter().map(|p| p.spec.clone()).collect();
        let params: Vec<_> = (self.parameters()?.into_iter().zip(&specs))
            .map(|((n, t), s)| (n, s.strip(t)))
            .collect();
        // 8-bit codes are flat over the padded tensor: saved as they are.
        let moments: Vec<_> = (self.optimizer_state()?.into_iter().zip(&specs))
            .map(|((n, mut sm), s)| {
                if sm.scales.is_none() {
                    sm.m = s.strip(sm.m);
                    sm.v = s.strip(sm.v);
                }
                (n, sm)
            })
            .collect();
        let manifest = Manifest {
            format: checkpoint::FORMAT.to_string(),
            step: self.step,
            model: self.model.describe(),
            precision: self.cfg.precision,
            train: TrainState {
                batch: self.cfg.batch,
                seq_len: self.cfg.seq_len,
                steps: self.cfg.steps,
                seed: self.cfg.seed,
            },
            schedule: self.schedule,
            optimizer: self.opt,
            scaler: self.scaler.clone(),
            sampler_state: self.sampler.state(),
            data: self.data_info.clone(),
            plan: self.plan.as_ref().map(|p| p.choice()).or(self.forced),
            skipped_steps: self.skipped_steps,
            recoveries: self.recoveries,
            files: Default::default(),
        };
        checkpoint::save(path.as_ref(), manifest, &params, &moments)
    }

    /// Continues from the checkpoint at `path` (a checkpoint directory, or a
    /// directory of them: the newest valid one). Returns the step it resumed at.
    pub fn resume(&mut self, path: impl AsRef<Path>) -> Result<u64> {
        let ck = checkpoint::open(path.as_ref())?;
        self.restore(ck)
    }

    /// Loads a checkpoint's state into this trainer, after checking that it
    /// was made for the same model, precision and parameters.
    pub fn restore(&mut self, ck: Checkpoint) -> Result<u64> {
        let m = &ck.manifest;
        let mismatch = |what: String| Error::CheckpointMismatch {
            path: ck.path.clone(),
            what,
        };
        let mine = self.model.describe();
        if m.model != mine {
            return Err(mismatch(describe_diff(&m.model, &mine)));
        }
        if m.precision != self.cfg.precision {
            return Err(mismatch(format!(
                "it was trained in {}, this run is {}; set TrainConfig::precision {}",
                m.precision, self.cfg.precision, m.precision
            )));
        }
        let saved: HashMap<&str, &HostTensor> =
            ck.params.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for p in &self.state.params {
            match saved.get(p.spec.name.as_str()) {
                Some(t) if t.shape == p.spec.shape || t.shape == p.spec.file_shape() => {}
                Some(t) => {
                    return Err(mismatch(format!(
                        "parameter {} is {} there, {} here",
                        p.spec.name,
                        t.shape,
                        p.spec.file_shape()
                    )))
                }
                None => return Err(mismatch(format!("parameter {} is missing", p.spec.name))),
            }
        }
        if saved.len() != self.state.params.len() {
            return Err(mismatch(format!(
                "it has {} parameters, this model {}",
                saved.len(),
                self.state.params.len()
            )));
        }
        let t = &m.train;
        if (t.batch, t.seq_len, t.seed) != (self.cfg.batch, self.cfg.seq_len, self.cfg.seed) {
            log::warn!(
                "resuming a run saved with batch {} × {} and seed {} under batch {} × {} and seed {}: training continues, but not as the original run would have",
                t.batch, t.seq_len, t.seed, self.cfg.batch, self.cfg.seq_len, self.cfg.seed
            );
        }
        if m.schedule != self.schedule {
            log::warn!("the learning-rate schedule differs from the checkpoint's (AdamW::lr or TrainConfig::steps changed); using this run's");
        }
        for p in &self.state.params {
            let mut sm = ck.moments[&p.spec.name].clone();
            let pad = |t: &HostTensor| p.spec.pad(t).map_err(|e| mismatch(e.to_string()));
            self.device
                .write(&p.value, &pad(saved[p.spec.name.as_str()])?)?;
            if sm.scales.is_none() {
                sm.m = pad(&sm.m)?;
                sm.v = pad(&sm.v)?;
            }
            p.moments
                .write(&mut self.device, &sm)
                .map_err(|e| mismatch(e.to_string()))?;
            p.refresh_shadow(&mut self.device)?;
        }
        self.step = m.step;
        self.scaler = m.scaler.clone();
        self.sampler = Rng::new(m.sampler_state);
        self.skipped_steps = m.skipped_steps;
        self.recoveries = m.recoveries;
        self.data_info = m.data.clone();
        if let (Some(choice), None) = (m.plan, self.forced) {
            self.adopt_saved_plan(choice);
        }
        Ok(self.step)
    }

    /// Uses the checkpoint's plan when it still fits (same micro-batches, same
    /// numerics); otherwise the next step plans afresh.
    fn adopt_saved_plan(&mut self, choice: Choice) {
        let budget = self.plan_budget();
        match planner::plan_choice(&self.model, self.opt, &self.cfg, budget, choice) {
            Ok(p) => self.plan = Some(p),
            Err(e) => {
                log::warn!(
                    "the checkpoint's plan ({} / {}) no longer fits ({e}); planning again",
                    choice.micro_batch,
                    choice.recompute
                );
                self.plan = None;
            }
        }
    }

    /// AdamW moments by parameter name, wherever and however they are kept.
    pub fn optimizer_state(&mut self) -> Result<Vec<(String, SavedMoments)>> {
        let mut out = Vec::new();
        for p in &self.state.params {
            out.push((p.spec.name.clone(), p.moments.read(&mut self.device)?));
        }
        Ok(out)
    }

    /// Replaces every parameter's value with its entry of `weights` (by
    /// name, f32, in its checkpoint shape or padded): pretrained weights, as
    /// [`crate::nn::hf::load`] reads them. Moments, step and sampler are left
    /// alone. [`Error::CheckpointMismatch`] (against `source`) names the first
    /// parameter missing or mis-shaped, before any is written.
    pub fn set_weights(&mut self, source: &Path, weights: &[(String, HostTensor)]) -> Result<()> {
        let by_name: HashMap<&str, &HostTensor> =
            weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mismatch = |what: String| Error::CheckpointMismatch {
            path: source.to_path_buf(),
            what,
        };
        let mut padded = Vec::with_capacity(self.state.params.len());
        for p in &self.state.params {
            let t = by_name
                .get(p.spec.name.as_str())
                .ok_or_else(|| mismatch(format!("no tensor for parameter {}", p.spec.name)))?;
            if t.dtype != crate::tensor::DType::F32 {
                return Err(mismatch(format!("{} is {}, not f32", p.spec.name, t.dtype)));
            }
            padded.push(p.spec.pad(t).map_err(|e| mismatch(e.to_string()))?);
        }
        for (p, t) in self.state.params.iter().zip(&padded) {
            self.device.write(&p.value, t)?;
            p.refresh_shadow(&mut self.device)?;
        }
        Ok(())
    }

    /// Current parameter values, by name, in the model's order.
    pub fn parameters(&mut self) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::new();
        for p in &self.state.params {
            out.push((p.spec.name.clone(), self.device.download(p.value.view())?));
        }
        Ok(out)
    }
}

/// Names the fields where two model descriptions differ.
fn describe_diff(saved: &serde_json::Value, mine: &serde_json::Value) -> String {
    match (saved.as_object(), mine.as_object()) {
        (Some(a), Some(b)) => {
            let diffs: Vec<String> = a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k} is {v} there, {} here",
                        b.get(k).map_or("absent".into(), |x| x.to_string())
                    )
                })
                .collect();
            format!("the model differs: {}", diffs.join(", "))
        }
        _ => format!("the model differs: {saved} there, {mine} here"),
    }
}
