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

/// The path a write to `path` lands on: symlinks followed to their final
/// target, which need not exist yet (a dangling link is written through too).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::io(
        path,
        std::io::Error::other("too many levels of symbolic links"),
    ))
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

/// [`Error::OutputIsInput`] when `path` (as `what`) is one of `inputs`, or lies
/// inside an input directory.
pub fn check_not_input(path: &Path, what: &str, inputs: &[Input]) -> Result<()> {
    let target = resolve(path)?;
    for input in inputs {
        let collides = if fs::metadata(&input.path).is_ok_and(|m| m.is_dir()) {
            inside(&target, &input.path)
        } else {
            same_file(&target, &input.path)
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

/// Checks, before any work, that `path` can be written as `what`: it is not an
/// input, its directory exists and takes a new file, and it is not a directory.
/// Creates and removes a probe file; writes nothing at `path` itself.
pub fn preflight(path: &Path, what: &str, inputs: &[Input]) -> Result<()> {
    check_not_input(path, what, inputs)?;
    let target = resolve(path)?;
    if target.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::other(format!("{what} names a directory; give a file path")),
        ));
    }
    let dir = parent_dir(&target);
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

/// Creates and removes a file in `dir`: the only reliable test that a new file
/// can be written there (permissions, read-only mounts, ACLs, root).
pub fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".headroom-probe-{}", std::process::id()));
    let r = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"probe"));
    let _ = fs::remove_file(&probe);
    r.map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` (named `what` in errors) by the rules of this
/// module: never over an input, through symlinks, atomically for regular
/// files, directly for devices and FIFOs, no temporary file left on error.
pub fn write(path: &Path, what: &str, bytes: &[u8], inputs: &[Input]) -> Result<()> {
    check_not_input(path, what, inputs)?;
    let target = resolve(path)?;
    match fs::metadata(&target) {
        Ok(m) if m.is_dir() => Err(Error::io(
            path,
            std::io::Error::other(format!("{what} names a directory; give a file path")),
        )),
        Ok(m) if !m.is_file() => {
            // A device or FIFO: write into it, as `cat > /dev/null` would.
            let mut f = OpenOptions::new()
                .write(true)
                .open(&target)
                .map_err(|e| Error::io(path, e))?;
            f.write_all(bytes).map_err(|e| Error::io(path, e))
        }
        existing => replace_atomically(&target, bytes, existing.ok().map(|m| m.permissions()))
            .map_err(|e| Error::io(path, e)),
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
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let r = (|| {
        write_new_synced(&tmp, bytes)?;
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

/// Creates `path` (which must not exist), writes `bytes` and fsyncs it. The
/// caller removes it on error.
pub(crate) fn write_new_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
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
/// input, through symlinks, devices and FIFOs as they are. `append` keeps what
/// a regular file holds (a resumed run); otherwise it is truncated.
pub fn open_stream(path: &Path, what: &str, inputs: &[Input], append: bool) -> Result<File> {
    check_not_input(path, what, inputs)?;
    let target = resolve(path)?;
    let regular = fs::metadata(&target).map_or(true, |m| m.is_file());
    let mut o = OpenOptions::new();
    o.write(true);
    if regular {
        o.create(true).append(append).truncate(!append);
    }
    o.open(&target).map_err(|e| Error::io(path, e))
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
