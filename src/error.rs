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

    /// The device allocator could not provide memory.
    #[error("out of memory: tried to allocate {requested} bytes; {allocated} bytes allocated, {reserved} bytes reserved by headroom, {device_free} bytes free on the device. Lower --batch or --seq, or raise the budget.")]
    OutOfMemory {
        requested: u64,
        allocated: u64,
        reserved: u64,
        device_free: u64,
    },

    /// Internal invariant broken: a bug in headroom, not in the caller's input.
    #[error("internal error (please report): {0}")]
    Internal(String),
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

    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what,
            why: why.into(),
        }
    }
}
