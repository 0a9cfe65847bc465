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
    /// Forward-pass nodes of a training step.
    Forward,
    /// Backward-pass nodes: gradients and their intermediates.
    Backward,
    /// Forward nodes run again for the backward pass under a recompute policy.
    Recompute,
    /// The optimizer update after the last micro-batch.
    Optimizer,
    /// Every node of an evaluation run (loss only, no gradients).
    Eval,
}

impl MemPhase {
    /// The lowercase name used in traces, reports and plots ("forward", ...).
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
    /// Model parameters.
    Weight,
    /// AdamW's moments (`m`, `v`).
    OptimizerState,
    /// Parameter gradients: the program's gradient values.
    Gradient,
    /// Any other node output: forward activations and backward intermediates.
    Activation,
    /// Token and target batches uploaded to the device.
    Data,
    /// The backend libraries' workspace (cuBLAS's), allocated once at setup.
    Workspace,
}

/// What an allocation is for: cheap to copy, set by the executor before each node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The part of the step the allocation serves.
    pub phase: MemPhase,
    /// The op that allocated it, or a label for allocations outside programs
    /// ("param", "upload", ...).
    pub op: &'static str,
    /// What the tensor is.
    pub tensor: TensorKind,
    /// The graph value the tensor holds, when known.
    pub value: Option<u32>,
}

impl Tag {
    /// A tag for no particular graph value (`value: None`).
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

/// What an [`Event`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A block handed to a tensor (allocated bytes grow).
    Alloc,
    /// A block given back to the cache (allocated bytes shrink).
    Free,
    /// A segment obtained from the device (reserved bytes grow).
    SegmentAlloc,
    /// A segment returned to the device (reserved bytes shrink).
    SegmentFree,
}

/// One event, as written to `--memory-trace`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Segment handle + offset: identifies a block while it is live.
    pub addr: u64,
    /// Size of the block (rounded) or segment, in bytes.
    pub bytes: u64,
    /// [`Tag::phase`] when the event happened.
    pub phase: MemPhase,
    /// [`Tag::op`] when the event happened.
    pub op: String,
    /// [`Tag::tensor`] when the event happened.
    pub tensor: TensorKind,
    /// [`Tag::value`] when the event happened.
    pub value: Option<u32>,
    /// Training step (1-based) the event belongs to; 0 before the first.
    pub step: u64,
    /// Allocated bytes just after the event.
    pub allocated: u64,
    /// Reserved bytes just after the event.
    pub reserved: u64,
}

/// A trace file: the events plus what is needed to read them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The file format, [`TRACE_FORMAT`] for the traces this build reads.
    pub format: String,
    /// Name of the backend that ran ("cpu", "cuda", "wgpu", "simulated").
    pub device: String,
    /// The budget in force when the trace was taken, in bytes; `None`: none.
    pub budget_bytes: Option<u64>,
    /// Every allocator event, in order.
    pub events: Vec<Event>,
}

/// The `format` string of the trace files this build writes and reads.
pub const TRACE_FORMAT: &str = "headroom-memory-trace-1";

impl Trace {
    /// Reads a trace written by `headroom train --memory-trace FILE` (or
    /// `headroom plan --memory-trace`). Fails with [`Error::Io`] when the file
    /// cannot be read, and [`Error::BadTrace`] when it is not a trace or its
    /// format is not [`TRACE_FORMAT`].
    pub fn load(path: &std::path::Path) -> Result<Trace> {
        let bad = |why: String| Error::BadTrace {
            path: path.to_path_buf(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(bad("it is not a regular file".into()));
        }
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let t: Trace = serde_json::from_slice(&text).map_err(|e| {
            bad(format!(
                "it is not a memory trace ({e}); write one with `headroom train --memory-trace FILE` or `headroom plan --memory-trace FILE`"
            ))
        })?;
        if t.format != TRACE_FORMAT {
            return Err(bad(format!(
                "its format '{}' is not '{TRACE_FORMAT}' (written by another version of headroom?)",
                t.format
            )));
        }
        Ok(t)
    }
}
