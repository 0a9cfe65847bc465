//! Checkpoints: a saved training state that resumes exactly.
//!
//! A checkpoint is a directory `step-00000040/` holding `model.safetensors`
//! (the weights, under GPT-2's names, readable from Python as they are),
//! `optimizer.safetensors` (AdamW moments, `<name>.exp_avg` / `.exp_avg_sq`:
//! f32, or u8 codes with `<name>.exp_avg_scales` for 8-bit state) and
//! `manifest.json` (everything else, and a SHA-256 per file). It is written into
//! a temporary directory beside its final name, every file and the directory are
//! fsynced, and only then renamed into place: a checkpoint is complete and valid
//! or absent, whenever the process dies.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::graph::amp::Precision;
use crate::optim::{AdamW, LrSchedule};
use crate::scaler::LossScaler;
use crate::schedule::state::SavedMoments;
use crate::schedule::Choice;
use crate::tensor::{DType, HostTensor, Shape};

/// The manifest `format` this build writes; [`load`] refuses any other.
pub const FORMAT: &str = "headroom-checkpoint-1";
/// The weights file in a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// The AdamW moments file in a checkpoint directory.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The manifest file; a directory holding one is a checkpoint to [`open`].
pub const MANIFEST_FILE: &str = "manifest.json";

/// Size and checksum of one checkpoint file, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// SHA-256 of the file's bytes, in lowercase hex.
    pub sha256: String,
    /// The file's length in bytes.
    pub bytes: u64,
}

/// The training settings that shape the step (and so must match to resume exactly).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Sequences per optimizer step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Optimizer steps the run was configured for in all.
    pub steps: u64,
    /// The run's random seed.
    pub seed: u64,
}

/// The training data a run drew batches from; a resume on other data is
/// refused by the CLI unless asked for (`--allow-data-change`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// The dataset's name.
    pub name: String,
    /// Length of its training split, in tokens (bytes for the byte tokenizer).
    pub train_bytes: usize,
    /// SHA-256 of its training split ([`Dataset::fingerprint`]); `None` in
    /// checkpoints written before it was recorded.
    ///
    /// [`Dataset::fingerprint`]: crate::data::Dataset::fingerprint
    #[serde(default)]
    pub sha256: Option<String>,
    /// What made its ids (`bytes`, `gpt2`, a tokenizer.json's path, `token
    /// file`), so `headroom sample` decodes as the run encoded; `None` in
    /// checkpoints written before it was recorded (bytes).
    #[serde(default)]
    pub tokenizer: Option<String>,
}

/// The contents of `manifest.json`: everything a checkpoint holds besides the
/// tensors, and the checksums of the tensor files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`] for checkpoints this build writes.
    pub format: String,
    /// Optimizer steps taken.
    pub step: u64,
    /// The model's own description (for GPT: its `GptConfig`).
    pub model: serde_json::Value,
    /// The precision the run trained in; resuming in another is refused.
    pub precision: Precision,
    /// The settings that shape a step; resuming with another batch, sequence
    /// length or seed only warns.
    pub train: TrainState,
    /// The learning-rate schedule; a resumed run keeps its own, warning when
    /// it differs.
    pub schedule: LrSchedule,
    /// AdamW's hyper-parameters.
    pub optimizer: AdamW,
    /// The loss scaler's state; `None` when the run used none.
    pub scaler: Option<LossScaler>,
    /// State of the training-data sampler's random generator.
    pub sampler_state: u64,
    /// The training data, when batches were drawn through the trainer.
    pub data: Option<DataInfo>,
    /// The micro-batch size and recompute policy in use, when one was planned
    /// or forced; a resumed run adopts it again if it still fits.
    pub plan: Option<Choice>,
    /// Steps skipped because the loss or the gradient norm was not finite.
    pub skipped_steps: u64,
    /// Out-of-memory errors in a step after which the trainer planned again.
    pub recoveries: u64,
    /// Size and SHA-256 of [`MODEL_FILE`] and [`OPTIMIZER_FILE`], by file
    /// name; [`load`] verifies both.
    pub files: BTreeMap<String, FileSum>,
}

/// A loaded checkpoint: its manifest, weights and AdamW moments by name.
pub struct Checkpoint {
    /// The checkpoint directory it was loaded from.
    pub path: PathBuf,
    /// The verified manifest.
    pub manifest: Manifest,
    /// The weights by parameter name, all f32.
    pub params: Vec<(String, HostTensor)>,
    /// Each parameter's AdamW moments, by parameter name.
    pub moments: HashMap<String, SavedMoments>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, why: impl Into<String>) -> Error {
    Error::CorruptCheckpoint {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// SHA-256 of `bytes` in lowercase hex (checkpoint files, data sets).
pub(crate) fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The directory name of the checkpoint after `step` steps.
pub fn name_for(step: u64) -> String {
    format!("step-{step:08}")
}

fn safetensors_bytes(tensors: &[(String, &HostTensor)]) -> Result<Vec<u8>> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = match t.dtype {
            DType::F32 => safetensors::Dtype::F32,
            DType::U8 => safetensors::Dtype::U8,
            other => {
                return Err(Error::Internal(format!(
                    "checkpoint tensor {name} is {other}"
                )))
            }
        };
        let v = safetensors::tensor::TensorView::new(dtype, t.shape.dims().to_vec(), &t.data)
            .map_err(|e| Error::Internal(format!("safetensors view of {name}: {e}")))?;
        views.push((name.clone(), v));
    }
    safetensors::tensor::serialize(views, None)
        .map_err(|e| Error::Internal(format!("safetensors: {e}")))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<FileSum> {
    crate::output::write_new_synced(path, bytes).map_err(io(path))?;
    Ok(FileSum {
        sha256: sha256(bytes),
        bytes: bytes.len() as u64,
    })
}

/// Writes a checkpoint at `path` (its directory, e.g. `run/step-00000040`),
/// atomically: a reader sees the old state or the complete new one.
pub fn save(
    path: &Path,
    mut manifest: Manifest,
    params: &[(String, HostTensor)],
    moments: &[(String, SavedMoments)],
) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| {
            Error::invalid(
                "checkpoint path",
                format!("{} has no final component", path.display()),
            )
        })?
        .to_string_lossy()
        .into_owned();
    fs::create_dir_all(parent).map_err(io(parent))?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = parent.join(format!(".tmp-{name}-{}-{nonce}", std::process::id()));
    fs::create_dir(&tmp).map_err(io(&tmp))?;
    crate::checkpoint::in_progress::set(Some(tmp.clone()));
    let r = (|| {
        let model: Vec<(String, &HostTensor)> =
            params.iter().map(|(n, t)| (n.clone(), t)).collect();
        let model_sum = write_synced(&tmp.join(MODEL_FILE), &safetensors_bytes(&model)?)?;
        let mut opt: Vec<(String, &HostTensor)> = Vec::new();
        for (n, sm) in moments {
            opt.push((format!("{n}.exp_avg"), &sm.m));
            opt.push((format!("{n}.exp_avg_sq"), &sm.v));
            if let Some(sc) = &sm.scales {
                opt.push((format!("{n}.exp_avg_scales"), sc));
            }
        }
        let opt_sum = write_synced(&tmp.join(OPTIMIZER_FILE), &safetensors_bytes(&opt)?)?;
        manifest.files = BTreeMap::from([
            (MODEL_FILE.to_string(), model_sum),
            (OPTIMIZER_FILE.to_string(), opt_sum),
        ]);
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        write_synced(&tmp.join(MANIFEST_FILE), &json)?;
        crate::output::sync_dir(&tmp);
        let old = parent.join(format!(".old-{name}-{}-{nonce}", std::process::id()));
        let replaced = path.exists();
        if replaced {
            fs::rename(path, &old).map_err(io(path))?;
        }
        if let Err(e) = fs::rename(&tmp, path) {
            // Put the old checkpoint back: a failed save must not lose it.
            if replaced {
                let _ = fs::rename(&old, path);
            }
            return Err(io(path)(e));
        }
        crate::output::sync_dir(parent);
        if replaced {
            fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(())
    })();
    crate::checkpoint::in_progress::set(None);
    if r.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    r
}

fn read_tensors(path: &Path, bytes: &[u8]) -> Result<Vec<(String, HostTensor)>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| corrupt(path, format!("not safetensors: {e}")))?;
    let mut out = Vec::new();
    for (name, v) in st.tensors() {
        let dtype = match v.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            // 8-bit optimizer state's codes.
            safetensors::Dtype::U8 => DType::U8,
            other => {
                return Err(corrupt(
                    path,
                    format!("{name} is {other:?}, expected F32 (or U8 codes)"),
                ))
            }
        };
        out.push((
            name,
            HostTensor {
                shape: Shape::new(v.shape()),
                dtype,
                data: v.data().to_vec(),
            },
        ));
    }
    Ok(out)
}

/// Loads and verifies the checkpoint at `path` (a `step-*` directory).
pub fn load(path: &Path) -> Result<Checkpoint> {
    let mpath = path.join(MANIFEST_FILE);
    let text =
        fs::read(&mpath).map_err(|e| corrupt(&mpath, format!("cannot read the manifest ({e})")))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| corrupt(&mpath, format!("bad manifest ({e})")))?;
    if manifest.format != FORMAT {
        return Err(corrupt(
            &mpath,
            format!("format '{}' is not '{FORMAT}'", manifest.format),
        ));
    }
    let mut contents = HashMap::new();
    for name in [MODEL_FILE, OPTIMIZER_FILE] {
        let p = path.join(name);
        let sum = manifest
            .files
            .get(name)
            .ok_or_else(|| corrupt(&mpath, format!("no checksum for {name}")))?;
        let bytes = fs::read(&p).map_err(|e| corrupt(&p, format!("cannot read ({e})")))?;
        if bytes.len() as u64 != sum.bytes {
            return Err(corrupt(
                &p,
                format!(
                    "{} bytes, the manifest says {} (truncated?)",
                    bytes.len(),
                    sum.bytes
                ),
            ));
        }
        if sha256(&bytes) != sum.sha256 {
            return Err(corrupt(
                &p,
                "checksum mismatch (the file changed after it was saved)",
            ));
        }
        contents.insert(name, bytes);
    }
    let params = read_tensors(&path.join(MODEL_FILE), &contents[MODEL_FILE])?;
    let opt = read_tensors(&path.join(OPTIMIZER_FILE), &contents[OPTIMIZER_FILE])?;
    let mut opt: HashMap<String, HostTensor> = opt.into_iter().collect();
    let mut moments = HashMap::new();
    for (name, _) in &params {
        let m = opt.remove(&format!("{name}.exp_avg"));
        let v = opt.remove(&format!("{name}.exp_avg_sq"));
        let scales = opt.remove(&format!("{name}.exp_avg_scales"));
        match (m, v) {
            (Some(m), Some(v)) => {
                moments.insert(name.clone(), SavedMoments { m, v, scales });
            }
            _ => {
                return Err(corrupt(
                    &path.join(OPTIMIZER_FILE),
                    format!("no AdamW moments for {name}"),
                ))
            }
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        manifest,
        params,
        moments,
    })
}

/// Checkpoints in `dir`, newest first (by step).
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            v.push((step, e.path()));
        }
    }
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(v)
}

/// The newest checkpoint in `dir` that loads and verifies. Corrupt ones are
/// skipped with a warning naming the file; `Ok(None)` when there are none at all.
pub fn latest_valid(dir: &Path) -> Result<Option<Checkpoint>> {
    let all = list(dir)?;
    let mut last = None;
    for (_, p) in &all {
        match load(p) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => {
                log::warn!("skipping checkpoint {}: {e}", p.display());
                last = Some(e.to_string());
            }
        }
    }
    match last {
        None => Ok(None),
        Some(why) => Err(Error::NoValidCheckpoint {
            dir: dir.to_path_buf(),
            tried: all.len(),
            last: why,
        }),
    }
}

/// Loads `path` itself when it is a checkpoint, else the newest valid one in it.
pub fn open(path: &Path) -> Result<Checkpoint> {
    if path.join(MANIFEST_FILE).exists() {
        return load(path);
    }
    let none = |last: &str| Error::NoValidCheckpoint {
        dir: path.to_path_buf(),
        tried: 0,
        last: last.into(),
    };
    if !path.is_dir() {
        return Err(none(if path.exists() {
            "it is not a directory"
        } else {
            "it does not exist"
        }));
    }
    latest_valid(path)?.ok_or_else(|| none("no checkpoints there"))
}

/// Keeps the newest `keep` checkpoints in `dir` (at least one: the newest is
/// never removed) and removes leftovers of saves that never finished.
pub fn prune(dir: &Path, keep: usize) -> Result<()> {
    for (_, p) in list(dir)?.into_iter().skip(keep.max(1)) {
        fs::remove_dir_all(&p).map_err(io(&p))?;
    }
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(".tmp-step-") || name.starts_with(".old-step-");
        let pid = std::process::id().to_string();
        if ours && !name.contains(&format!("-{pid}-")) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

/// Bytes one checkpoint of a model with `num_params` parameters takes on
/// disk: f32 weights and two f32 AdamW moments, plus room for the manifest and
/// the safetensors headers.
pub fn estimated_bytes(num_params: usize, num_tensors: usize) -> u64 {
    12 * num_params as u64 + 256 * num_tensors as u64 + (64 << 10)
}

/// The lock file that marks a checkpoint directory as in use by one run.
pub const LOCK_FILE: &str = ".headroom.lock";

/// A checkpoint directory this process may write: checked before the first
/// step and locked for as long as this value lives, so a second run on the
/// same directory fails at its start instead of overwriting this one's
/// checkpoints mid-run.
///
/// The lock is an advisory `flock` on [`LOCK_FILE`], held by the open file:
/// the kernel releases it when the process exits, however it dies, so a lock
/// file left by a killed run is simply taken over. The file holds the holder's
/// PID, for the error message of the run that is refused.
#[derive(Debug)]
pub struct CheckpointDir {
    path: PathBuf,
    _lock: File,
}

impl CheckpointDir {
    /// Prepares `dir` for checkpoints of `checkpoint_bytes` each (see
    /// [`estimated_bytes`]): creates it if missing, checks it is a directory
    /// that takes new files and has free space for two checkpoints (the old one
    /// stays until the new one is complete), and takes its lock.
    /// [`Error::CheckpointDir`] says which check failed and what to do.
    pub fn open(dir: &Path, checkpoint_bytes: u64) -> Result<CheckpointDir> {
        let bad = |why: String| Error::CheckpointDir {
            dir: dir.to_path_buf(),
            why,
        };
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(bad(
                    "it exists and is not a directory; give a directory (it is created if missing)"
                        .into(),
                ))
            }
            Ok(_) => {}
            Err(_) => fs::create_dir_all(dir).map_err(|e| {
                bad(format!(
                    "it cannot be created ({e}); check the path and its parent's permissions"
                ))
            })?,
        }
        crate::output::probe_writable(dir).map_err(|e| {
            bad(format!(
                "a file cannot be created in it ({}); check its permissions, or whether its file system is read-only or full",
                match &e {
                    Error::Io { source, .. } => source.to_string(),
                    other => other.to_string(),
                }
            ))
        })?;
        let need = 2 * checkpoint_bytes;
        if let Ok(free) = fs4::available_space(dir) {
            if free < need {
                return Err(bad(format!(
                    "{} free, and two checkpoints of this model need {} (one is kept until the next is complete); free space or choose another directory",
                    crate::memory::format_bytes(free),
                    crate::memory::format_bytes(need)
                )));
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| bad(format!("its lock file cannot be opened ({e})")))?;
        match fs4::FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                // The holder writes its PID just after it takes the lock.
                let mut holder = String::new();
                for _ in 0..20 {
                    holder = fs::read_to_string(&lock_path).unwrap_or_default();
                    if !holder.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                let holder = holder.trim();
                return Err(bad(format!(
                    "another run (PID {}) is using it; wait for that run to finish, or give this one its own directory",
                    if holder.is_empty() { "unknown" } else { holder }
                )));
            }
            Err(fs4::TryLockError::Error(e)) => {
                // Some network and FUSE file systems have no flock (ENOLCK,
                // EOPNOTSUPP): checkpoints still work, unguarded.
                log::warn!(
                    "{} cannot be locked ({e}): nothing stops a second run from writing it too",
                    dir.display()
                );
            }
        }
        // Ours now: record who holds it (a stale PID from a killed run is
        // simply overwritten).
        use std::io::{Seek, Write};
        let pid = std::process::id().to_string();
        lock.set_len(0)
            .and_then(|_| lock.seek(std::io::SeekFrom::Start(0)))
            .and_then(|_| lock.write_all(pid.as_bytes()))
            .and_then(|_| lock.flush())
            .map_err(|e| bad(format!("its lock file cannot be written ({e})")))?;
        Ok(CheckpointDir {
            path: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// How many checkpoints of `checkpoint_bytes` the free space holds now
    /// (`None` where the platform does not say).
    pub fn room_for(&self, checkpoint_bytes: u64) -> Option<u64> {
        fs4::available_space(&self.path)
            .ok()
            .map(|free| free / checkpoint_bytes.max(1))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the checkpoint after `step` steps goes.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.path.join(name_for(step))
    }
}

/// The save in progress, so a second Ctrl-C can remove its temporary directory
/// before the process exits.
pub mod in_progress {
    use std::path::PathBuf;
    use std::sync::Mutex;

    static CURRENT: Mutex<Option<PathBuf>> = Mutex::new(None);

    /// Records the temporary directory of the save under way (`None`: no save
    /// is under way), for [`abandon`].
    pub fn set(p: Option<PathBuf>) {
        if let Ok(mut c) = CURRENT.lock() {
            *c = p;
        }
    }

    /// Removes the temporary directory of an unfinished save, if any.
    pub fn abandon() {
        if let Ok(mut c) = CURRENT.lock() {
            if let Some(p) = c.take() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
}
