//! One error type for everything a user can cause or a device can refuse.
//! Every variant's message says what went wrong *and* what to do about it.

use std::path::PathBuf;

use crate::dtype::DType;

/// `std::result::Result` with headroom's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in headroom. Each message says what went wrong
/// and what to do; only [`Error::Internal`] means a bug in headroom itself.
///
/// Messages name the library's API (`TrainConfig::batch`, `Device::set_budget`);
/// the `headroom` CLI rewrites those names into its flags (`--batch`,
/// `--budget`). `Debug` prints the same message, so `fn main() -> Result<()>`
/// shows a readable error.
#[derive(thiserror::Error)]
pub enum Error {
    /// An op was given operands whose shapes do not fit its shape rule.
    #[error("shape error in {op}: {detail}")]
    Shape {
        /// The op (or check, such as `param` or `backward`) that refused.
        op: &'static str,
        /// What did not fit, with the shapes involved.
        detail: String,
    },

    /// An op was given an operand of a dtype it does not take.
    #[error("dtype error in {op}: {detail}")]
    DType {
        /// The op (or conversion) that refused.
        op: &'static str,
        /// The dtype expected and the one given, or the dtypes found mixed.
        detail: String,
    },

    /// The backend cannot do this (dtype or feature missing on this device).
    #[error("the {backend} backend does not support {what}; {hint}")]
    Unsupported {
        /// The backend that refused (`autodiff` for second derivatives).
        backend: &'static str,
        /// What it was asked to do.
        what: String,
        /// What to do instead, printed after the message.
        hint: &'static str,
    },

    /// A file could not be read or written (data set, checkpoint, metrics,
    /// report, memory trace).
    #[error("cannot read or write {path}: {source}; check the path, its permissions and the free disk space")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A data set cannot be used: too short for the sequence length, too large
    /// for memory, or not a regular file.
    #[error("data set {path} is unusable: {why}")]
    Data {
        /// The data set's name or path.
        path: String,
        /// What is wrong and what to supply instead.
        why: String,
    },

    /// A data set holds a token id the model has no embedding row for.
    #[error("data set {path}: token {index} (byte offset {byte_offset}) is id {id}, not below the model's vocabulary of {vocab}; use a model with a vocabulary of at least {} or the tokenizer the data was made with", *id as u64 + 1)]
    TokenOutOfRange {
        /// The data set's name or path.
        path: String,
        /// Index of the token in its file.
        index: u64,
        /// Its byte offset in the file (header included).
        byte_offset: u64,
        /// The id.
        id: u32,
        /// The model's vocabulary.
        vocab: usize,
    },

    /// A memory trace (from `--memory-trace`) cannot be read as one.
    #[error("memory trace {path} is unusable: {why}")]
    BadTrace {
        /// The trace file.
        path: PathBuf,
        /// What is wrong, and where a valid trace comes from.
        why: String,
    },

    /// An output path names a file the run also reads: writing it would
    /// destroy an input.
    #[error("refusing to write {output} to {path}: it is the {input} this run reads; choose another path for {output}")]
    OutputIsInput {
        /// What would be written (a flag or API name, such as `--metrics-out`).
        output: String,
        /// The input it collides with (such as `--data`).
        input: String,
        /// The file both name.
        path: PathBuf,
    },

    /// A checkpoint directory cannot take checkpoints: not a directory, not
    /// writable, too little free space, or locked by another run.
    #[error("checkpoint directory {dir} cannot be used: {why}")]
    CheckpointDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it and what to do.
        why: String,
    },

    /// Saving a checkpoint failed in a way the run cannot continue past.
    #[error("saving the checkpoint of step {step} failed: {why}; {newest}")]
    CheckpointFailed {
        /// The step whose state could not be saved.
        step: u64,
        /// The underlying error.
        why: String,
        /// Which checkpoint is the newest valid one (or that there is none).
        newest: String,
    },

    /// The model preset named is not one of `known`.
    #[error("unknown model preset '{name}'; choose one of: {known}")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The accepted names ([`PRESETS`](crate::nn::PRESETS)), comma-separated.
        known: String,
    },

    /// The backend named is not one of `known`.
    #[error("unknown backend '{name}'; choose one of: {known}")]
    UnknownBackend {
        /// The name given.
        name: String,
        /// The accepted names, comma-separated.
        known: String,
    },

    /// A configuration value outside its accepted range.
    #[error("invalid {what}: {why}")]
    InvalidArgument {
        /// The setting at fault, such as `TrainConfig::batch` or `model config`.
        what: &'static str,
        /// The value given and what is accepted.
        why: String,
    },

    /// A kernel found bad data at run time (for example a token id outside the vocabulary).
    #[error("{op}: {detail}")]
    Kernel {
        /// The kernel that found the bad data.
        op: &'static str,
        /// The bad value and where to look for its cause.
        detail: String,
    },

    /// The allocator could not provide memory within the budget or the device.
    #[error("{}", oom_message(*requested, *allocated, *reserved, *budget, *device_free))]
    OutOfMemory {
        /// Bytes the failed allocation asked for.
        requested: u64,
        /// Bytes in blocks held by live tensors at the time.
        allocated: u64,
        /// Bytes of device segments the allocator held, cached or in use.
        reserved: u64,
        /// The budget in bytes, `None` when no budget was set.
        budget: Option<u64>,
        /// Bytes the device reported still free.
        device_free: u64,
    },

    /// The host pool (offloaded state) could not provide memory within its
    /// budget or the host's memory.
    #[error("host memory for offloaded state ran out: {} requested with {} in use{}. Raise --host-budget (Device::set_host_budget), or use fewer offload levers.", crate::memory::format_bytes(*requested), crate::memory::format_bytes(*allocated), budget.map_or(String::new(), |b| format!(" under a host budget of {}", crate::memory::format_bytes(b))))]
    HostOutOfMemory {
        /// Bytes the failed allocation asked for.
        requested: u64,
        /// Bytes held by live host tensors at the time.
        allocated: u64,
        /// The host budget, `None` when none was set.
        budget: Option<u64>,
    },

    /// The planner found no plan within the budget (before any step ran).
    #[error("no plan fits the budget of {}: {detail}. Raise the budget (Device::set_budget) to at least {}, or lower TrainConfig::batch / TrainConfig::seq_len.", crate::memory::format_bytes(*budget), crate::memory::format_bytes(*needed))]
    NoPlanFits {
        /// The budget in bytes.
        budget: u64,
        /// Peak reserved bytes of the smallest plan tried.
        needed: u64,
        /// That plan (micro-batch, recompute policy) and where its memory goes.
        detail: String,
    },

    /// In-step recovery gave up.
    #[error("out of memory in step {step} and recovery gave up after {attempts} re-plans: {last}")]
    RecoveryFailed {
        /// The 1-based step that ran out of memory.
        step: u64,
        /// Re-plans tried before giving up.
        attempts: u32,
        /// The last out-of-memory error, or why no re-plan fit.
        last: String,
    },

    /// f16 training kept overflowing until the loss scale fell below its floor.
    #[error("step {step}: the f16 loss scale would fall to {scale} (floor {floor}): gradients overflow at every scale. Train in bf16 or f32 (TrainConfig::precision), or lower the learning rate (AdamW::lr).")]
    LossScaleFloor {
        /// The 1-based step whose overflow would have lowered the scale.
        step: u64,
        /// The scale the back-off would have set.
        scale: f64,
        /// The lowest scale allowed ([`LossScaler::min_scale`](crate::scaler::LossScaler::min_scale)).
        floor: f64,
    },

    /// A checkpoint file failed to load or verify (format, manifest, size or
    /// checksum).
    #[error("checkpoint {path} is corrupt: {why}")]
    CorruptCheckpoint {
        /// The file that failed.
        path: PathBuf,
        /// Which check failed.
        why: String,
    },

    /// A checkpoint directory holds nothing usable: every checkpoint in `dir`
    /// failed to load, or (when a checkpoint is opened from it) there is none.
    #[error("no valid checkpoint in {dir} ({tried} tried; last problem: {last})")]
    NoValidCheckpoint {
        /// The directory searched.
        dir: PathBuf,
        /// How many checkpoints it held (0 when none).
        tried: usize,
        /// Why the last one tried was rejected.
        last: String,
    },

    /// A checkpoint made for something else than what is being resumed.
    #[error("checkpoint {path} does not match this run: {what}")]
    CheckpointMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// What differs (model config, precision, a parameter's name or shape).
        what: String,
    },

    /// Training stopped by Ctrl-C after saving (the CLI exits with 130).
    #[error("interrupted after step {step}")]
    Interrupted {
        /// Steps completed before the interrupt.
        step: u64,
    },

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
    let hint = if budget.is_some_and(|x| x < crate::memory::caching::SMALL_BUFFER) {
        "the budget is below the allocator's smallest segment of 2 MiB, so nothing can be reserved; give a budget of at least 2 MiB (Device::set_budget)"
    } else if cached > requested {
        "the cache holds enough but in pieces too small (fragmentation); free tensors sooner or lower TrainConfig::batch"
    } else if budget.is_some_and(|x| reserved + requested > x) {
        "raise the budget (Device::set_budget), or lower TrainConfig::batch / TrainConfig::seq_len"
    } else {
        "the device itself is full: lower TrainConfig::batch / TrainConfig::seq_len or free memory held by other processes"
    };
    format!(
        "out of memory: tried to allocate {}; {} allocated, {} reserved but unallocated; {budget_s}; {} free on the device. Fix: {hint}.",
        b(requested),
        b(allocated),
        b(cached),
        b(device_free)
    )
}

impl std::fmt::Debug for Error {
    /// The message, which already names its cause (an `Io`'s OS error): what
    /// `fn main() -> Result<()>` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

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

    /// An [`Error::InvalidArgument`] for the setting `what`; `why` says what is
    /// wrong and what is accepted.
    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what,
            why: why.into(),
        }
    }
}
