//! One error type for everything a user can cause or a device can refuse.
//! Every variant's message says what went wrong *and* what to do about it.

use std::path::PathBuf;

use crate::tensor::DType;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was given operands whose shapes do not fit its shape rule.
    #[error("shape error in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    /// An op was given an operand of a dtype it does not take.
    #[error("dtype error in {op}: {detail}")]
    DType { op: &'static str, detail: String },

    /// The backend cannot do this (dtype or feature missing on this device).
    #[error("the {backend} backend does not support {what}; {hint}")]
    Unsupported {
        backend: &'static str,
        what: String,
        hint: &'static str,
    },

    #[error("cannot read {path}: {source}; check the path and its permissions")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("data set {path} is unusable: {why}")]
    Data { path: String, why: String },

    #[error("unknown model preset '{name}'; choose one of: {known}")]
    UnknownPreset { name: String, known: String },

    #[error("unknown backend '{name}'; choose one of: {known}")]
    UnknownBackend { name: String, known: String },

    /// A configuration value outside its accepted range.
    #[error("invalid {what}: {why}")]
    InvalidArgument { what: &'static str, why: String },

    /// A kernel found bad data at run time (for example a token id outside the vocabulary).
    #[error("{op}: {detail}")]
    Kernel { op: &'static str, detail: String },

    /// The allocator could not provide memory within the budget or the device.
    #[error("{}", oom_message(*requested, *allocated, *reserved, *budget, *device_free))]
    OutOfMemory {
        requested: u64,
        allocated: u64,
        reserved: u64,
        budget: Option<u64>,
        device_free: u64,
    },

    /// The planner found no plan within the budget (before any step ran).
    #[error("no plan fits the budget of {}: {detail}. Raise --budget to at least {}, or lower --batch / --seq.", crate::memory::format_bytes(*budget), crate::memory::format_bytes(*needed))]
    NoPlanFits {
        budget: u64,
        needed: u64,
        detail: String,
    },

    /// In-step recovery gave up.
    #[error("out of memory in step {step} and recovery gave up after {attempts} re-plans: {last}")]
    RecoveryFailed {
        step: u64,
        attempts: u32,
        last: String,
    },

    /// f16 training kept overflowing until the loss scale fell below its floor.
    #[error("step {step}: the f16 loss scale would fall to {scale} (floor {floor}): gradients overflow at every scale. Train in bf16 or f32 (--precision), or lower --lr.")]
    LossScaleFloor { step: u64, scale: f64, floor: f64 },

    #[error("checkpoint {path} is corrupt: {why}")]
    CorruptCheckpoint { path: PathBuf, why: String },

    #[error("no valid checkpoint in {dir} ({tried} tried; last problem: {last}); start without --resume or point --checkpoint-dir elsewhere")]
    NoValidCheckpoint {
        dir: PathBuf,
        tried: usize,
        last: String,
    },

    /// A checkpoint made for something else than what is being resumed.
    #[error("checkpoint {path} does not match this run: {what}")]
    CheckpointMismatch { path: PathBuf, what: String },

    /// Training stopped by Ctrl-C after saving (the CLI exits with 130).
    #[error("interrupted after step {step}")]
    Interrupted { step: u64 },

    /// Internal invariant broken: a bug in headroom, not in the caller's input.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

fn oom_message(
    requested: u64,
    allocated: u64,
    reserved: u64,
    budget: Option<u64>,
    device_free: u64,
) -> String {
    use crate::memory::format_bytes as b;
    let budget_s = match budget {
        Some(x) => format!("budget {}", b(x)),
        None => "no budget set".to_string(),
    };
    let cached = reserved.saturating_sub(allocated);
    let hint = if cached > requested {
        "the cache holds enough but in pieces too small (fragmentation); free tensors sooner or lower --batch"
    } else if budget.is_some_and(|x| reserved + requested > x) {
        "raise --budget, or lower --batch / --seq"
    } else {
        "the device itself is full: lower --batch / --seq or free memory held by other processes"
    };
    format!(
        "out of memory: tried to allocate {}; {} allocated, {} reserved but unallocated; {budget_s}; {} free on the device. Fix: {hint}.",
        b(requested),
        b(allocated),
        b(cached),
        b(device_free)
    )
}

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }

    pub(crate) fn dtype(op: &'static str, expected: &str, got: DType) -> Self {
        Error::DType {
            op,
            detail: format!("expected {expected}, got {got}"),
        }
    }

    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what,
            why: why.into(),
        }
    }
}
