//! Shared by tests/cuda_emulated*.rs: finding a C++ compiler and building a
//! kernel driver (tests/cuda_emu/<name>.cpp) against kernels/.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `g++` (or HEADROOM_CXX) when it runs; `None` skips the test with a reason,
/// unless HEADROOM_REQUIRE_EMULATION is set, when a missing compiler fails it.
pub fn compiler() -> Option<String> {
    let cxx = std::env::var("HEADROOM_CXX").unwrap_or_else(|_| "g++".into());
    let found = Command::new(&cxx).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("HEADROOM_REQUIRE_EMULATION").is_none(),
            "HEADROOM_REQUIRE_EMULATION is set but {cxx} cannot be run"
        );
        eprintln!("skipping: no C++ compiler ({cxx})");
        return None;
    }
    Some(cxx)
}

/// Builds the driver `tests/cuda_emu/<name>.cpp` into `dir/<name>`; warnings
/// are errors, so a kernel change that the emulator cannot take fails loudly.
pub fn build_driver(cxx: &str, dir: &Path, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = dir.join(name);
    let out = Command::new(cxx)
        .args([
            "-std=c++20",
            "-O2",
            "-Wall",
            "-Werror",
            "-Wno-unknown-pragmas",
        ])
        .args(["-Wno-sign-compare", "-I"])
        .arg(root.join("kernels"))
        .arg(root.join(format!("tests/cuda_emu/{name}.cpp")))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C++ compiler");
    assert!(
        out.status.success(),
        "the emulated {name} kernels do not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}
