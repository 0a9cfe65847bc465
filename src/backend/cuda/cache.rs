//! Compiled kernels kept on disk, so a process pays NVRTC's seconds once per
//! kernel source, architecture and compiler, not once per run.
//!
//! An entry is `<dir>/<file>-<key>.cubin`: the CUBIN followed by the SHA-256 of
//! it. The key hashes everything the CUBIN depends on (the source with
//! `common.cuh`, the architecture, NVRTC's version, the options and include
//! paths), so a change to any of them misses. An entry whose checksum does not
//! match (a torn write, a disk error) is compiled again and replaced. Writes go
//! to a temporary name and are renamed into place, so a reader never sees half
//! an entry. The cache is an optimisation: any failure to read or write it is
//! logged and the kernel compiled as if there were none.

use std::fs;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// Where entries live: `$HEADROOM_KERNEL_CACHE` (`0` or `off`: no cache),
/// else `$XDG_CACHE_HOME/headroom/kernels`, else `~/.cache/headroom/kernels`.
pub fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HEADROOM_KERNEL_CACHE") {
        return match d.to_str() {
            Some("0") | Some("off") => None,
            _ => Some(PathBuf::from(d)),
        };
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("headroom").join("kernels"))
}

/// The hex SHA-256 of every part, each length-prefixed so that no two lists
/// of parts hash alike.
pub fn key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn path(dir: &std::path::Path, file: &str, key: &str) -> PathBuf {
    dir.join(format!("{file}-{}.cubin", &key[..32]))
}

/// The cached CUBIN of `file` under `key`, if present and intact.
pub fn load(file: &str, key: &str) -> Option<Vec<u8>> {
    let p = path(&dir()?, file, key);
    let bytes = fs::read(&p).ok()?;
    let (cubin, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if Sha256::digest(cubin).as_slice() != sum {
        log::warn!(
            "{}: damaged kernel cache entry; compiling again",
            p.display()
        );
        return None;
    }
    Some(cubin.to_vec())
}

/// Keeps `cubin` for `file` under `key`; failures are logged, never returned.
pub fn store(file: &str, key: &str, cubin: &[u8]) {
    let Some(dir) = dir() else { return };
    let p = path(&dir, file, key);
    let tmp = dir.join(format!(".{file}-{}.{}.tmp", &key[..32], std::process::id()));
    let write = || -> std::io::Result<()> {
        fs::create_dir_all(&dir)?;
        let mut bytes = cubin.to_vec();
        bytes.extend_from_slice(&Sha256::digest(cubin));
        fs::write(&tmp, &bytes)?;
        fs::rename(&tmp, &p)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        log::debug!("kernel cache {}: {e}; not cached", dir.display());
    }
}
