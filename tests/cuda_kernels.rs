//! Every kernel in kernels/ compiles with NVRTC for sm_80 (A100), sm_86 (RTX 30),
//! sm_89 (RTX 40) and sm_90 (H100), on a machine with no GPU: pip's nvidia-cuda-nvrtc provides the
//! compiler and nvidia-cuda-runtime the fp16/bf16 headers. Without libnvrtc the
//! test skips with a reason, unless HEADROOM_REQUIRE_NVRTC is set (CI sets it).

use headroom::backend::cuda::compile::{
    compile, include_paths, nvrtc_available, nvrtc_version, KERNEL_FILES,
};

#[test]
fn every_kernel_compiles_for_ampere_ada_and_hopper() {
    if !nvrtc_available() {
        assert!(
            std::env::var_os("HEADROOM_REQUIRE_NVRTC").is_none(),
            "HEADROOM_REQUIRE_NVRTC is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
        );
        eprintln!("skipping: libnvrtc not found");
        return;
    }
    assert!(
        !include_paths().is_empty(),
        "cuda_fp16.h not found: set HEADROOM_CUDA_INCLUDE"
    );
    // CI runs this once with NVRTC 13 and once with 12, the two driver lines
    // users have.
    println!("NVRTC {:?}", nvrtc_version().unwrap());
    for arch in ["sm_80", "sm_86", "sm_89", "sm_90"] {
        for (file, src) in KERNEL_FILES {
            let cubin = compile(file, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                cubin.starts_with(b"\x7fELF"),
                "{file} for {arch}: a CUBIN is an ELF image"
            );
            // Each extern "C" kernel's name is in the image.
            for line in src.lines().filter(|l| l.contains("__global__")) {
                let name = line
                    .split("void ")
                    .nth(1)
                    .and_then(|r| r.split('(').next())
                    .unwrap()
                    .replace("##S", "bf16"); // every file instantiates bf16
                let needle = name.trim();
                if !needle.contains('#') {
                    assert!(
                        cubin.windows(needle.len()).any(|w| w == needle.as_bytes()),
                        "{file} for {arch}: kernel {needle} missing"
                    );
                }
            }
        }
    }
}
