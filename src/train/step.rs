//! One optimizer step: the batch's gradients accumulated over micro-batches
//! (recovering inside the step when memory runs out), then one update: the
//! gradient norm (which also detects f16 overflow), clipping, the loss scaler
//! and AdamW. Parameters and moments change only in the update, so a failure
//! before it loses nothing.

use std::time::Instant;

use super::{StepReport, Trainer};
use crate::backend::profile::Span;
use crate::backend::{Device, DeviceTensor};
use crate::config::TrainConfig;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::memory::{format_bytes, MemPhase, MemoryStats, Tag, TensorKind};
use crate::nn::Model;
use crate::optim::AdamW;
use crate::schedule::planner::{self, Choice, Plan};
use crate::schedule::run::{Owned, Recover, Runner};
use crate::tensor::HostTensor;

/// Re-plans one step may make before giving up.
const MAX_RECOVERIES: u32 = 8;

/// Fragmentation above this share of reserved memory, wasting more than this
/// share of the budget, is worth a warning...
const FRAGMENTATION_WARN: f64 = 0.10;
/// ...once it has lasted this many steps in a row (the first steps grow the
/// cache and are often fragmented for a moment).
const FRAGMENTATION_STEPS: u32 = 5;

/// What the update did.
struct Update {
    lr: f64,
    norm: f64,
    skipped: bool,
}

impl<M: Model> Trainer<M> {
    /// One optimizer step on `batch`, in micro-batches as planned. Parameters
    /// and optimizer state change only at its very end, so when memory runs out
    /// inside it the trainer re-plans for the memory really available and re-runs
    /// the failed micro-batch; gradients of earlier micro-batches stay.
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        self.check_batch(batch)?;
        let start = Instant::now();
        self.device.set_step(self.step + 1);
        let choice = self.ensure_plan(batch.batch, batch.seq)?;
        self.place_state(choice)?;
        let scale = self.scaler.as_ref().map_or(1.0, |s| s.scale);
        let acc = match self.accumulate(batch, choice, scale) {
            // Recovery escalated to a plan that moves the moments: move them
            // and take the step again (no parameter changed yet).
            Err(Error::OutOfMemory { .. }) if self.plan_moves_state() => {
                let c = self.plan.as_ref().map(|p| p.choice()).unwrap_or(choice);
                self.place_state(c)?;
                let mut acc = self.accumulate(batch, c, scale)?;
                acc.recoveries += 1;
                acc
            }
            r => r?,
        };
        let loss = acc.loss as f32;
        self.device
            .set_tag(Tag::new(MemPhase::Optimizer, "adamw", TensorKind::Gradient));
        let update = match acc.released {
            Some(r) => Ok(self.released(r, loss, scale)),
            None => self.update(&acc.grads, loss, scale),
        };
        let memory = self.device.memory_stats();
        // The step's one owner of its gradients frees them, whatever happened.
        acc.grads.free(&mut self.device);
        let Update { lr, norm, skipped } = update?;
        self.warn_fragmentation(&memory);
        self.step += 1;
        let secs = start.elapsed().as_secs_f64();
        Ok(StepReport {
            step: self.step,
            loss,
            lr,
            grad_norm: norm,
            tokens_per_s: (batch.batch * batch.seq) as f64 / secs.max(1e-9),
            skipped,
            micro_batch: acc.choice.micro_batch,
            recompute: acc.choice.recompute,
            levers: acc.choice.levers,
            predicted_peak_bytes: self.predicted_peak(),
            recoveries: acc.recoveries,
            precision: self.cfg.precision,
            loss_scale: scale,
            memory,
        })
    }

    /// Whether the plan now in force keeps the moments elsewhere than they are.
    fn plan_moves_state(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| p.levers.placement() != self.state.placement)
    }

    /// The report of an update gradient release already applied.
    fn released(&mut self, r: crate::schedule::run::Released, loss: f32, scale: f64) -> Update {
        let norm = r.sum_squares.sqrt() / scale;
        let skipped = r.stopped || !loss.is_finite();
        if skipped {
            self.skipped_steps += 1;
            log::warn!(
                "step {}: loss {loss} / gradient norm {norm} is not finite under gradient release; {} (the run may be diverging: lower AdamW::lr)",
                self.step + 1,
                if r.stopped { "the updates stopped at the first non-finite gradient" } else { "the updates were applied" }
            );
        }
        Update {
            lr: self.schedule.at(self.step),
            norm,
            skipped,
        }
    }

    /// The batch's gradients, with in-step recovery unless the plan is forced
    /// or recovery is off.
    fn accumulate(
        &mut self,
        batch: &Batch,
        choice: Choice,
        scale: f64,
    ) -> Result<crate::schedule::run::Accumulated> {
        let recover_on = self.forced.is_none() && self.cfg.recover;
        // Disjoint fields: the runner borrows the device and the compiled
        // graphs, the recovery the plan and its inputs.
        let (plan, recoveries) = (&mut self.plan, &mut self.recoveries);
        let (model, cfg, opt, step) = (&self.model, &self.cfg, self.opt, self.step + 1);
        let mut replan = |device: &mut Device, err: &Error, failed, retried_same, attempts| {
            *recoveries += 1;
            let inputs = Replan {
                model,
                opt,
                cfg,
                batch: batch.batch,
                seq: batch.seq,
                step,
            };
            let p = replan_after_oom(
                device,
                &inputs,
                plan.as_ref(),
                failed,
                retried_same,
                attempts,
                err,
            )?;
            let c = p.choice();
            *plan = Some(p);
            Ok(c)
        };
        // Gradient release applies the update inside the backward: no
        // clipping (release is legal only without it), the loss scale undone.
        let lr = self.schedule.at(self.step);
        let release = self.opt.step_args(lr, self.step + 1, 1.0 / scale);
        let mut runner = Runner {
            device: &mut self.device,
            compiler: &mut self.compiler,
            model: &self.model,
            state: &self.state,
        };
        let hook: Option<&mut Recover<'_>> = if recover_on { Some(&mut replan) } else { None };
        runner.accumulate(batch, choice, scale, hook, Some(&release))
    }

    /// Clipping, the loss scaler and AdamW over `grads`; skipped (parameters
    /// untouched) when the loss or the gradient norm is not finite.
    fn update(&mut self, grads: &Owned, loss: f32, scale: f64) -> Result<Update> {
        if std::mem::take(&mut self.inject_overflow) {
            self.poison(&grads.0)?;
        }
        let views = grads.views();
        // One pass over the gradients: Σg² both detects inf/NaN (the sum is not
        // finite) and gives the norm; unscaling is folded into AdamW's grad scale.
        let span = Span::new(MemPhase::Optimizer, "optimizer", "sum_squares");
        let norm = self.device.timed(span, |b| b.sum_squares(&views))?.sqrt() / scale;
        let lr = self.schedule.at(self.step);
        let skipped = !(loss.is_finite() && norm.is_finite());
        if let Some(s) = &mut self.scaler {
            s.update(skipped, self.step + 1)?;
        }
        if skipped {
            self.skipped_steps += 1;
            let why = if self.scaler.is_some() {
                "f16 overflow; the loss scaler adjusts"
            } else {
                "the run may be diverging: lower AdamW::lr"
            };
            log::warn!(
                "step {}: loss {loss} / gradient norm {norm} is not finite; update skipped ({why})",
                self.step + 1
            );
        } else {
            let clip = self.opt.clip_scale(norm);
            let args = self.opt.step_args(lr, self.step + 1, clip / scale);
            let all: Vec<usize> = (0..self.state.params.len()).collect();
            crate::schedule::update::apply(&mut self.device, &self.state, &all, &views, &args)?;
        }
        Ok(Update { lr, norm, skipped })
    }

    /// Writes inf into the first element of the first gradient.
    fn poison(&mut self, grads: &[DeviceTensor]) -> Result<()> {
        let Some(g) = grads.first() else {
            return Ok(());
        };
        let h = self.device.download(g.view())?;
        let mut v = h.to_f64_vec();
        v[0] = f64::INFINITY;
        let h = HostTensor::from_f64_as(h.shape.clone(), &v, h.dtype)?;
        self.device.write(g, &h)
    }

    /// PyTorch users learn to watch for "cached ≫ allocated"; say it once, when
    /// it has lasted [`FRAGMENTATION_STEPS`] steps and wastes a real share of
    /// the budget: a few cached MiB under a budget of GiB cost nothing.
    fn warn_fragmentation(&mut self, m: &MemoryStats) {
        if self.device.is_simulated() || self.fragmented_steps > FRAGMENTATION_STEPS {
            return;
        }
        let wasted = m.peak_reserved_bytes.saturating_sub(m.peak_allocated_bytes);
        let budget = self.plan_budget();
        if !costly_fragmentation(m, budget) {
            self.fragmented_steps = 0;
            return;
        }
        self.fragmented_steps += 1;
        if self.fragmented_steps == FRAGMENTATION_STEPS {
            // Past the limit: never again in this run.
            self.fragmented_steps = FRAGMENTATION_STEPS + 1;
            log::warn!(
                "memory fragmentation {:.0}% for {FRAGMENTATION_STEPS} steps: peak reserved {} for a peak of {} allocated, {} of the {} budget in cached segments no tensor could use. The caching allocator keeps them for reuse; they count against the budget.",
                100.0 * m.fragmentation(),
                format_bytes(m.peak_reserved_bytes),
                format_bytes(m.peak_allocated_bytes),
                format_bytes(wasted),
                format_bytes(budget)
            );
        }
    }
}

/// What a re-plan inside a step needs to know.
struct Replan<'a> {
    model: &'a dyn Model,
    opt: AdamW,
    cfg: &'a TrainConfig,
    batch: usize,
    seq: usize,
    /// The 1-based step being taken.
    step: u64,
}

/// A new plan after an out-of-memory error inside a step: within the memory
/// really available now, with micro-batches that divide the failed one (so
/// the rest of the batch still splits evenly). The first time the same plan
/// comes back the failure is taken as transient and retried once; after
/// that the new plan must predict a lower peak than the failed one.
fn replan_after_oom(
    device: &mut Device,
    r: &Replan<'_>,
    current: Option<&Plan>,
    failed: Choice,
    retried_same: bool,
    attempts: u32,
    err: &Error,
) -> Result<Plan> {
    let step = r.step;
    if attempts > MAX_RECOVERIES {
        return Err(Error::RecoveryFailed {
            step,
            attempts: attempts - 1,
            last: err.to_string(),
        });
    }
    device.empty_cache();
    let stats = device.memory_stats();
    let available = stats.reserved_bytes + device.free_memory();
    let mut cap = device
        .budget_bytes()
        .map_or(available, |bud| bud.min(available));
    if retried_same {
        let predicted = current.map_or(0, |p| p.predicted_peak_bytes);
        cap = cap.min(predicted.saturating_sub(1));
    }
    let allowed: Vec<usize> = (1..=failed.micro_batch)
        .rev()
        .filter(|m| failed.micro_batch % m == 0)
        .collect();
    let cfg = TrainConfig {
        batch: r.batch,
        seq_len: r.seq,
        ..r.cfg.clone()
    };
    let p =
        planner::plan(r.model, r.opt, &cfg, cap, &allowed).map_err(|pe| Error::RecoveryFailed {
            step,
            attempts,
            last: format!(
                "{err}; no plan fits the {} now available: {pe}",
                format_bytes(cap)
            ),
        })?;
    log::warn!(
        "step {step}: out of memory in micro-batch of {} (recompute {}); re-planned for {} available: micro-batch {}, recompute {}, predicted peak {}",
        failed.micro_batch,
        failed.recompute,
        format_bytes(cap),
        p.micro_batch,
        p.recompute,
        format_bytes(p.predicted_peak_bytes)
    );
    Ok(p)
}

/// Whether the cache's unused part is worth a warning: over
/// [`FRAGMENTATION_WARN`] of what is reserved *and* of the budget.
fn costly_fragmentation(m: &MemoryStats, budget: u64) -> bool {
    let wasted = m.peak_reserved_bytes.saturating_sub(m.peak_allocated_bytes);
    m.fragmentation() > FRAGMENTATION_WARN && wasted as f64 > FRAGMENTATION_WARN * budget as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(allocated_mib: u64, reserved_mib: u64) -> MemoryStats {
        MemoryStats {
            peak_allocated_bytes: allocated_mib << 20,
            peak_reserved_bytes: reserved_mib << 20,
            ..Default::default()
        }
    }

    #[test]
    fn fragmentation_warns_only_when_it_costs_budget() {
        // The default tiny run: 31% of 56 MiB is cached, under a 21 GiB budget.
        assert!(!costly_fragmentation(&stats(39, 56), 21 << 30));
        // The same share under a 64 MiB budget is a fifth of it.
        assert!(costly_fragmentation(&stats(39, 56), 64 << 20));
        // Little fragmentation, tight budget: nothing to say.
        assert!(!costly_fragmentation(&stats(55, 56), 56 << 20));
    }
}
