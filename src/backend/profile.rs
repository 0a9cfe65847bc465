//! Per-op device time, summed by phase and op family: the breakdown that says
//! where the next millisecond of a step is. While a profile is on
//! ([`Device::start_profile`]), the device asks its backend for a timestamp
//! before and after each op (CUDA events on cuda, the host clock on cpu, whose
//! ops finish before `run` returns); [`Device::take_profile`] waits for the
//! work and sums the intervals. Backends with no timer (wgpu) give no profile.
//!
//! The time between one op's end and the next one's start is kept apart as
//! `idle_ms`: on a GPU that is the host's launch overhead, which no kernel
//! change removes.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::Device;
use crate::error::Result;
use crate::memory::MemPhase;

/// What one timed interval was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span {
    /// The phase ([`MemPhase::name`]).
    pub phase: &'static str,
    /// The op family (`graph::ops::<family>`, or "optimizer").
    pub family: &'static str,
    /// The op's name.
    pub op: &'static str,
}

impl Span {
    pub(crate) fn new(phase: MemPhase, family: &'static str, op: &'static str) -> Span {
        Span {
            phase: phase.name(),
            family,
            op,
        }
    }
}

/// The spans recorded so far, each with its two timestamp indices.
#[derive(Default)]
pub(crate) struct Recorder {
    spans: Vec<(Span, usize, usize)>,
    /// Set when the backend has no timer: nothing to record.
    untimed: bool,
}

/// One row of a profile: the ops of one name in one phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProfileRow {
    /// "forward", "backward", "recompute", "optimizer", ...
    pub phase: &'static str,
    /// The op family: "matmul", "attention", "layernorm", ...
    pub family: &'static str,
    /// The op: "matmul", "attention_backward", ...
    pub op: &'static str,
    /// How many times it ran.
    pub calls: u64,
    /// Device time, in milliseconds.
    pub ms: f64,
}

/// Device time per op over the profiled work.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Profile {
    /// Rows by phase, then family, then op.
    pub rows: Vec<ProfileRow>,
    /// Time between ops, when the device ran none of them.
    pub idle_ms: f64,
}

impl Profile {
    /// The sum of every op's time.
    pub fn busy_ms(&self) -> f64 {
        self.rows.iter().map(|r| r.ms).sum()
    }

    /// The same profile with every time and count divided by `n` (per step).
    pub fn per(&self, n: u64) -> Profile {
        let n = n.max(1);
        Profile {
            rows: self
                .rows
                .iter()
                .map(|r| ProfileRow {
                    calls: r.calls / n,
                    ms: r.ms / n as f64,
                    ..r.clone()
                })
                .collect(),
            idle_ms: self.idle_ms / n as f64,
        }
    }

    /// Totals by (phase, family), largest first.
    pub fn by_family(&self) -> Vec<ProfileRow> {
        let mut m: BTreeMap<(&str, &str), (u64, f64)> = BTreeMap::new();
        for r in &self.rows {
            let e = m.entry((r.phase, r.family)).or_default();
            e.0 += r.calls;
            e.1 += r.ms;
        }
        let mut v: Vec<ProfileRow> = m
            .into_iter()
            .map(|((phase, family), (calls, ms))| ProfileRow {
                phase,
                family,
                op: family,
                calls,
                ms,
            })
            .collect();
        v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        v
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let busy = self.busy_ms();
        writeln!(
            f,
            "{:<10} {:<14} {:>6} {:>10} {:>6}",
            "phase", "family", "ops", "ms", "share"
        )?;
        for r in self.by_family() {
            let share = if busy > 0.0 { 100.0 * r.ms / busy } else { 0.0 };
            writeln!(
                f,
                "{:<10} {:<14} {:>6} {:>10.3} {:>5.1}%",
                r.phase, r.family, r.calls, r.ms, share
            )?;
        }
        writeln!(
            f,
            "ops {busy:.3} ms, idle between ops {:.3} ms",
            self.idle_ms
        )
    }
}

impl Device {
    /// Starts timing every op from now on (see the module docs); a second call
    /// starts over.
    pub fn start_profile(&mut self) {
        self.profile = Some(Recorder::default());
    }

    /// Stops timing and returns the profile since [`Device::start_profile`],
    /// after waiting for the work; `None` if none was started or the backend
    /// keeps no timer.
    pub fn take_profile(&mut self) -> Result<Option<Profile>> {
        let Some(rec) = self.profile.take() else {
            return Ok(None);
        };
        let times = self.backend.take_timestamps()?;
        if rec.untimed || times.is_empty() {
            return Ok(None);
        }
        let mut rows: BTreeMap<Span, (u64, f64)> = BTreeMap::new();
        let (mut idle, mut last_end): (f64, Option<f64>) = (0.0, None);
        for (span, a, b) in &rec.spans {
            let (t0, t1) = (times[*a], times[*b]);
            let e = rows.entry(*span).or_default();
            e.0 += 1;
            e.1 += t1 - t0;
            if let Some(end) = last_end {
                idle += (t0 - end).max(0.0);
            }
            last_end = Some(t1);
        }
        Ok(Some(Profile {
            rows: rows
                .into_iter()
                .map(|(s, (calls, ms))| ProfileRow {
                    phase: s.phase,
                    family: s.family,
                    op: s.op,
                    calls,
                    ms,
                })
                .collect(),
            idle_ms: idle,
        }))
    }

    /// Runs `f` on the backend, timed as `span` while a profile is on.
    pub(crate) fn timed<T>(
        &mut self,
        span: Span,
        f: impl FnOnce(&mut dyn super::Backend) -> Result<T>,
    ) -> Result<T> {
        let recording = self.profile.as_ref().is_some_and(|r| !r.untimed);
        if !recording {
            return f(self.backend.as_mut());
        }
        let Some(a) = self.backend.timestamp()? else {
            if let Some(r) = self.profile.as_mut() {
                r.untimed = true;
            }
            return f(self.backend.as_mut());
        };
        let out = f(self.backend.as_mut())?;
        if let Some(b) = self.backend.timestamp()? {
            if let Some(r) = self.profile.as_mut() {
                r.spans.push((span, a, b));
            }
        }
        Ok(out)
    }
}
