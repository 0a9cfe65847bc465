//! Output files, written the way the user meant them.
//!
//! Every file headroom writes for a user (metrics, memory traces, SVG reports)
//! goes through here, so the rules hold everywhere:
//! - a file the run also reads (its data set, the checkpoint it resumes, the
//!   trace it draws) is never written: [`Error::OutputIsInput`];
//! - a symlink is written through: its target gets the bytes, the link stays;
//! - a regular file is replaced atomically (a temporary file beside the target,
//!   fsynced, renamed over it), keeping the old file's permissions; a reader
//!   sees the old bytes or the new ones, never half;
//! - a target that is not a regular file (a character device such as
//!   `/dev/null`, a FIFO) is written directly: renaming over it would replace
//!   the device with a plain file;
//! - the temporary file is removed on every error path (a full disk leaves
//!   nothing behind).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file the run reads, named by the setting that gave it (`--data`,
/// `Trainer::resume`), so an output that collides with it can say which.
#[derive(Clone, Debug)]
pub struct Input {
    /// The setting that names the file, as the user knows it.
    pub what: String,
    /// The path as given.
    pub path: PathBuf,
}

impl Input {
    /// An input file (or directory: every file below it counts) named by `what`.
    pub fn new(what: impl Into<String>, path: impl Into<PathBuf>) -> Input {
        Input {
            what: what.into(),
            path: path.into(),
        }
    }
}

/// Symlinks followed more than this many times are a loop, as the kernel's
/// `ELOOP` limit says.
const MAX_LINKS: usize = 40;

/// Where a write to a user's path lands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A regular file (or none yet) at this path, symlinks followed: replaced
    /// atomically.
    File(PathBuf),
    /// Something that is not a file to replace: a device, a FIFO, or an open
    /// descriptor (`/dev/stdout`, `/dev/fd/N`, which lead into `/proc`).
    /// Opened as given and appended to, so a shell's `> log` keeps what it
    /// already holds.
    Direct(PathBuf),
}

impl Target {
    /// The path to compare and open.
    pub fn path(&self) -> &Path {
        match self {
            Target::File(p) | Target::Direct(p) => p,
        }
    }
}

/// Where a write to `path` lands: symlinks followed to their final target,
/// which need not exist yet (a dangling link is written through too), except
/// that a link into `/proc` (a descriptor) or a target that is not a regular
/// file is written directly.
pub fn target(path: &Path) -> Result<Target> {
    if fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return Ok(Target::Direct(path.to_path_buf()));
    }
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                let next = match p.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
                if next.starts_with("/proc") {
                    return Ok(Target::Direct(path.to_path_buf()));
                }
                p = next;
            }
            _ => return Ok(Target::File(p)),
        }
    }
    Err(Error::io(
        path,
        std::io::Error::other("too many levels of symbolic links"),
    ))
}

/// The file a write to `path` lands on (see [`target`]).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    Ok(target(path)?.path().to_path_buf())
}

/// Whether two output paths name the same place, however spelled
/// (`m.json`, `./m.json`, a link to it), existing or not.
pub fn same_place(a: &Path, b: &Path) -> Result<bool> {
    let (a, b) = (resolve(a)?, resolve(b)?);
    if same_file(&a, &b) {
        return Ok(true);
    }
    let canonical = |p: &Path| {
        fs::canonicalize(parent_dir(p))
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    Ok(matches!((canonical(&a), canonical(&b)), (Some(x), Some(y)) if x == y))
}

/// The same file on disk: the same device and inode (hard links and symlinks
/// included), or on platforms without inodes the same canonical path.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (fs::canonicalize(a), fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// [`Error::OutputIsInput`] when `path` (as `what`, resolved to `target`) is
/// one of `inputs`, or lies inside an input directory.
fn not_an_input(path: &Path, target: &Path, what: &str, inputs: &[Input]) -> Result<()> {
    for input in inputs {
        let collides = if fs::metadata(&input.path).is_ok_and(|m| m.is_dir()) {
            inside(target, &input.path)
        } else {
            same_file(target, &input.path)
        };
        if collides {
            return Err(Error::OutputIsInput {
                output: what.to_string(),
                input: input.what.clone(),
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Whether `path` (which may not exist yet) lies inside the directory `dir`.
pub fn inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    // The file itself may not exist: canonicalise the deepest existing parent.
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return false,
        }
        if existing.as_os_str().is_empty() {
            existing = PathBuf::from(".");
        }
    }
    let Ok(mut full) = fs::canonicalize(&existing) else {
        return false;
    };
    full.extend(rest.iter().rev());
    full.starts_with(dir)
}

/// The directory a file at `path` is created in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn is_a_directory(path: &Path, what: &str) -> Error {
    Error::io(
        path,
        std::io::Error::other(format!("{what} names a directory; give a file path")),
    )
}

/// Checks, before any work, that `path` can be written as `what`: it is not an
/// input and not a directory; a device or descriptor opens for writing; a file
/// can be created in a regular file's directory (a probe file is created and
/// removed). Writes nothing at `path` itself.
pub fn preflight(path: &Path, what: &str, inputs: &[Input]) -> Result<()> {
    let t = target(path)?;
    not_an_input(path, t.path(), what, inputs)?;
    let file = match t {
        Target::Direct(p) => {
            // Opening is the test; nothing is written.
            return OpenOptions::new()
                .append(true)
                .open(&p)
                .map(drop)
                .map_err(|e| Error::io(path, e));
        }
        Target::File(p) => p,
    };
    if file.is_dir() {
        return Err(is_a_directory(path, what));
    }
    let dir = parent_dir(&file);
    if !dir.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::other(format!(
                "the directory {} does not exist; create it first",
                dir.display()
            )),
        ));
    }
    probe_writable(dir)
}

/// A name for a file of our own beside others, unique across processes and
/// across runs of one PID (in a container every run may be PID 1).
fn unique(stem: &str) -> String {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{stem}-{}-{nonce}", std::process::id())
}

/// Creates and removes a file in `dir`: the only reliable test that a new file
/// can be written there (permissions, read-only mounts, ACLs, root).
pub fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(unique(".headroom-probe"));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(mut f) => {
            let r = f.write_all(b"probe");
            drop(f);
            let _ = fs::remove_file(&probe);
            r.map_err(|e| Error::io(dir, e))
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Writes `bytes` to `path` (named `what` in errors) by the rules of this
/// module: never over an input, through symlinks, atomically for regular
/// files, directly for devices, FIFOs and descriptors, no temporary file left
/// on error.
pub fn write(path: &Path, what: &str, bytes: &[u8], inputs: &[Input]) -> Result<()> {
    let t = target(path)?;
    not_an_input(path, t.path(), what, inputs)?;
    match t {
        Target::Direct(p) => {
            // As `cat >> /dev/stdout` would: never renamed over, never truncated.
            let mut f = OpenOptions::new()
                .append(true)
                .open(&p)
                .map_err(|e| Error::io(path, e))?;
            f.write_all(bytes).map_err(|e| Error::io(path, e))
        }
        Target::File(p) => match fs::metadata(&p) {
            Ok(m) if m.is_dir() => Err(is_a_directory(path, what)),
            existing => replace_atomically(&p, bytes, existing.ok().map(|m| m.permissions()))
                .map_err(|e| Error::io(path, e)),
        },
    }
}

fn replace_atomically(
    target: &Path,
    bytes: &[u8],
    permissions: Option<fs::Permissions>,
) -> std::io::Result<()> {
    let dir = parent_dir(target);
    let name = target
        .file_name()
        .map_or("output".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(unique(&format!(".{name}.tmp")));
    let mut f = new_file(&tmp, permissions.as_ref())?;
    // From here the temporary file is ours: every error removes it.
    let r = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Some(p) = permissions {
            fs::set_permissions(&tmp, p)?;
        }
        fs::rename(&tmp, target)?;
        sync_dir(dir);
        Ok(())
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Creates `path`, which must not exist; where `permissions` are given it is
/// created with them, so a private file's new contents are never readable by
/// others for a moment.
fn new_file(path: &Path, permissions: Option<&fs::Permissions>) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    if let Some(p) = permissions {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(p.mode() & 0o777);
    }
    #[cfg(not(unix))]
    let _ = permissions;
    o.open(path)
}

/// Creates `path` (which must not exist), writes `bytes` and fsyncs it. The
/// caller removes it on error.
pub(crate) fn write_new_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = new_file(path, None)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Fsyncs a directory so a rename in it is durable (a no-op where directories
/// cannot be opened).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Opens `path` for a stream of lines (metrics), by the same rules: never an
/// input, through symlinks; devices, FIFOs and descriptors as they are
/// (appended to). `append` keeps what a regular file holds (a resumed run);
/// otherwise it is truncated.
pub fn open_stream(path: &Path, what: &str, inputs: &[Input], append: bool) -> Result<File> {
    let t = target(path)?;
    not_an_input(path, t.path(), what, inputs)?;
    let mut o = OpenOptions::new();
    let p = match t {
        Target::Direct(p) => {
            o.append(true);
            p
        }
        Target::File(p) => {
            o.write(true).create(true).append(append).truncate(!append);
            p
        }
    };
    o.open(&p).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("headroom-output-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn refuses_an_input_even_through_a_link() {
        let d = tmp("input");
        let data = d.join("data.txt");
        fs::write(&data, b"training text").unwrap();
        let inputs = [Input::new("--data", &data)];
        let e = write(&data, "--metrics-out", b"x", &inputs).unwrap_err();
        assert!(matches!(e, Error::OutputIsInput { .. }), "{e}");
        #[cfg(unix)]
        {
            let link = d.join("link");
            std::os::unix::fs::symlink(&data, &link).unwrap();
            let hard = d.join("hard");
            fs::hard_link(&data, &hard).unwrap();
            for p in [&link, &hard] {
                let e = write(p, "--metrics-out", b"x", &inputs).unwrap_err();
                assert!(e.to_string().contains("--data"), "{e}");
            }
        }
        assert_eq!(fs::read(&data).unwrap(), b"training text");
        let ck = d.join("ck");
        fs::create_dir_all(ck.join("step-1")).unwrap();
        let e = write(
            &ck.join("step-1/x"),
            "out",
            b"x",
            &[Input::new("resume", &ck)],
        );
        assert!(matches!(e, Err(Error::OutputIsInput { .. })));
        fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn writes_through_links_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp("links");
        let target = d.join("real.json");
        fs::write(&target, b"old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        let link = d.join("link.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write(&link, "out", b"new", &[]).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A dangling link creates its target.
        let dangling = d.join("dangling");
        std::os::unix::fs::symlink("later.json", &dangling).unwrap();
        write(&dangling, "out", b"1", &[]).unwrap();
        assert_eq!(fs::read(d.join("later.json")).unwrap(), b"1");
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_device_stays_a_device() {
        use std::os::unix::fs::FileTypeExt;
        write(Path::new("/dev/null"), "out", b"into the void", &[]).unwrap();
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[cfg(unix)]
    #[test]
    fn descriptors_and_devices_are_written_as_they_are() {
        assert_eq!(
            target(Path::new("/dev/null")).unwrap(),
            Target::Direct("/dev/null".into())
        );
        if Path::new("/dev/stdout").exists() {
            assert!(matches!(
                target(Path::new("/dev/stdout")).unwrap(),
                Target::Direct(_)
            ));
        }
        // A link into /proc/self/fd to a regular file must not be renamed over.
        let d = tmp("descriptor");
        let f = d.join("log");
        fs::write(&f, b"kept\n").unwrap();
        let file = File::options().append(true).open(&f).unwrap();
        use std::os::fd::AsRawFd;
        let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
        let link = d.join("fd-link");
        std::os::unix::fs::symlink(&fd, &link).unwrap();
        assert!(matches!(target(&link).unwrap(), Target::Direct(_)));
        write(&link, "out", b"added\n", &[]).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"kept\nadded\n");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn paths_spelled_differently_are_the_same_place() {
        let d = tmp("same-place");
        let a = d.join("m.json");
        let b = d.join(".").join("m.json");
        assert!(same_place(&a, &b).unwrap(), "before the file exists");
        fs::write(&a, b"x").unwrap();
        assert!(same_place(&a, &b).unwrap());
        assert!(!same_place(&a, &d.join("t.json")).unwrap());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stale_temporary_of_the_same_pid_is_no_obstacle() {
        let d = tmp("stale");
        let out = d.join("t.json");
        // What a SIGKILLed run with this PID would have left under the old names.
        let stale = d.join(format!(".t.json.tmp-{}", std::process::id()));
        fs::write(&stale, b"stale").unwrap();
        write(&out, "out", b"new", &[]).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"new");
        assert_eq!(fs::read(&stale).unwrap(), b"stale", "not ours to remove");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn preflight_names_a_missing_directory() {
        let e = preflight(Path::new("/nonexistent-dir/m.jsonl"), "--metrics-out", &[]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let d = tmp("preflight");
        let e = preflight(&d, "--metrics-out", &[]).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        preflight(&d.join("m.jsonl"), "--metrics-out", &[]).unwrap();
        assert!(
            !d.join("m.jsonl").exists(),
            "preflight must not create the file"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn inside_handles_missing_files() {
        let d = tmp("inside");
        assert!(inside(&d.join("a/b/c"), &d));
        assert!(!inside(Path::new("/tmp"), &d));
        fs::remove_dir_all(&d).unwrap();
    }
}
