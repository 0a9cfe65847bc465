//! The memory timeline: every allocation and free, tagged with the op and the
//! phase of the step that caused it, with allocated/reserved after each event.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which part of a training step an allocation serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemPhase {
    /// Parameters and optimizer state, made once.
    Setup,
    /// Batches copied to the device.
    Data,
    Forward,
    Backward,
    Recompute,
    Optimizer,
    Eval,
}

impl MemPhase {
    pub fn name(self) -> &'static str {
        match self {
            MemPhase::Setup => "setup",
            MemPhase::Data => "data",
            MemPhase::Forward => "forward",
            MemPhase::Backward => "backward",
            MemPhase::Recompute => "recompute",
            MemPhase::Optimizer => "optimizer",
            MemPhase::Eval => "eval",
        }
    }
}

/// What a tensor is, for the planner's breakdown of a peak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    Weight,
    OptimizerState,
    Gradient,
    Activation,
    Data,
    Workspace,
}

/// What an allocation is for: cheap to copy, set by the executor before each node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub phase: MemPhase,
    pub op: &'static str,
    pub tensor: TensorKind,
    /// The graph value the tensor holds, when known.
    pub value: Option<u32>,
}

impl Tag {
    pub fn new(phase: MemPhase, op: &'static str, tensor: TensorKind) -> Tag {
        Tag {
            phase,
            op,
            tensor,
            value: None,
        }
    }
}

impl Default for Tag {
    fn default() -> Self {
        Tag::new(MemPhase::Setup, "tensor", TensorKind::Activation)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Alloc,
    Free,
    SegmentAlloc,
    SegmentFree,
}

/// One event, as written to `--memory-trace`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// Segment handle + offset: identifies a block while it is live.
    pub addr: u64,
    pub bytes: u64,
    pub phase: MemPhase,
    pub op: String,
    pub tensor: TensorKind,
    pub value: Option<u32>,
    /// Training step (1-based) the event belongs to; 0 before the first.
    pub step: u64,
    pub allocated: u64,
    pub reserved: u64,
}

/// A trace file: the events plus what is needed to read them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub format: String,
    pub device: String,
    pub budget_bytes: Option<u64>,
    pub events: Vec<Event>,
}

pub const TRACE_FORMAT: &str = "headroom-memory-trace-1";

impl Trace {
    pub fn load(path: &std::path::Path) -> Result<Trace> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let t: Trace = serde_json::from_str(&text).map_err(|e| Error::Data {
            path: path.display().to_string(),
            why: format!(
                "not a memory trace ({e}); write one with `headroom train --memory-trace FILE`"
            ),
        })?;
        if t.format != TRACE_FORMAT {
            return Err(Error::Data {
                path: path.display().to_string(),
                why: format!("trace format '{}' is not '{TRACE_FORMAT}'", t.format),
            });
        }
        Ok(t)
    }
}
