//! Kernel files compiled on many threads at once (what a cuda backend does
//! when it opens): every file comes back as a CUBIN, and a second request is
//! the same shared one. Its own binary: it turns the disk cache off for the
//! whole process, so every file really goes through NVRTC here.

use std::sync::Arc;

use headroom::backend::cuda::compile::{compile_shared, nvrtc_available, prewarm};
use headroom::backend::cuda::ops::FAMILIES;

#[test]
fn every_file_compiles_on_threads_of_its_own_and_is_shared() {
    if !nvrtc_available() {
        assert!(
            std::env::var_os("HEADROOM_REQUIRE_NVRTC").is_none(),
            "HEADROOM_REQUIRE_NVRTC is set but libnvrtc cannot be loaded"
        );
        eprintln!("skipping: libnvrtc not found");
        return;
    }
    std::env::set_var("HEADROOM_KERNEL_CACHE", "off");
    let t0 = std::time::Instant::now();
    prewarm("sm_86");
    // Each waits for the prewarm thread compiling its file, or compiles it.
    let first: Vec<_> = FAMILIES
        .iter()
        .map(|k| compile_shared(k.file, k.source, "sm_86").unwrap_or_else(|e| panic!("{e}")))
        .collect();
    println!(
        "{} files for sm_86 on {} threads: {:.1} s",
        FAMILIES.len(),
        FAMILIES.len(),
        t0.elapsed().as_secs_f64()
    );
    for (k, cubin) in FAMILIES.iter().zip(&first) {
        assert!(cubin.starts_with(b"\x7fELF"), "{}: not a CUBIN", k.file);
        let again = compile_shared(k.file, k.source, "sm_86").unwrap();
        assert!(Arc::ptr_eq(cubin, &again), "{}: compiled twice", k.file);
    }
}
