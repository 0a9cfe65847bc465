//! The on-disk kernel cache: a second compile of the same source is the
//! cached CUBIN, and a damaged entry is compiled again and replaced. One test
//! in its own binary, since it points `HEADROOM_KERNEL_CACHE` at a directory
//! of its own for the whole process.

use headroom::backend::cuda::compile::{compile, nvrtc_available};
use headroom::backend::cuda::ops::FAMILIES;

#[test]
fn a_compiled_kernel_is_reused_and_a_damaged_entry_rebuilt() {
    if !nvrtc_available() {
        assert!(
            std::env::var_os("HEADROOM_REQUIRE_NVRTC").is_none(),
            "HEADROOM_REQUIRE_NVRTC is set but libnvrtc cannot be loaded"
        );
        eprintln!("skipping: libnvrtc not found");
        return;
    }
    let dir = std::env::temp_dir().join(format!("headroom-kcache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("HEADROOM_KERNEL_CACHE", &dir);
    // The smallest file: the cache does not care what it holds.
    let fam = FAMILIES.iter().min_by_key(|f| f.source.len()).unwrap();
    let entries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };

    let first = compile(fam.file, fam.source, "sm_80").unwrap();
    let stored = entries();
    assert_eq!(stored.len(), 1, "one entry, no temporary left: {stored:?}");
    let on_disk = std::fs::read(&stored[0]).unwrap();
    assert_eq!(
        &on_disk[..first.len()],
        &first[..],
        "entry = CUBIN + checksum"
    );
    assert_eq!(on_disk.len(), first.len() + 32);

    // A cached entry is what comes back: make it recognisable first.
    let mut marked = first.clone();
    marked[0] ^= 0xff;
    let mut entry = marked.clone();
    entry.extend_from_slice(&{
        use sha2::{Digest, Sha256};
        Sha256::digest(&marked)
    });
    std::fs::write(&stored[0], &entry).unwrap();
    assert_eq!(compile(fam.file, fam.source, "sm_80").unwrap(), marked);

    // A damaged entry (checksum off) is compiled again and replaced.
    std::fs::write(&stored[0], &on_disk[..on_disk.len() - 1]).unwrap();
    assert_eq!(compile(fam.file, fam.source, "sm_80").unwrap(), first);
    assert_eq!(std::fs::read(&stored[0]).unwrap(), on_disk);

    // Another architecture is another entry.
    compile(fam.file, fam.source, "sm_90").unwrap();
    assert_eq!(entries().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
