//! The kernel registry (`cuda::ops::FAMILIES`) against kernels/: every `.cu`
//! file is some family's, every entry point the host may launch is in the
//! NVRTC-compiled module of its file, and every kernel a file defines is
//! declared by its family (no dead kernels). Compiled for sm_80 (A100), sm_86
//! (RTX 30), sm_89 (RTX 40) and sm_90 (H100) on a machine with no GPU: pip's
//! nvidia-cuda-nvrtc provides the compiler and nvidia-cuda-runtime the
//! fp16/bf16 headers. Without libnvrtc the compile test skips with a reason,
//! unless HEADROOM_REQUIRE_NVRTC is set (CI sets it).

use std::collections::BTreeSet;
use std::path::Path;

use headroom::backend::cuda::compile::{
    compile_with_ptx, include_paths, nvrtc_available, nvrtc_version,
};
use headroom::backend::cuda::ops::FAMILIES;

/// The storage-type suffixes a kernel macro's `##S` can paste.
const SUFFIXES: [&str; 3] = ["f32", "f16", "bf16"];

/// The kernel names a source defines, as written: `add_##S`,
/// `cast_##S_FROM##_##S_TO`, `adamw_multi_f32`.
fn defined_kernels(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| l.split("extern \"C\" __global__ void ").nth(1))
        .map(|rest| rest.split('(').next().unwrap().trim().to_string())
        .collect()
}

/// Whether `symbol` is an instance of `pattern`, where a pasted macro
/// parameter (an upper-case name after `##`) stands for any storage suffix.
fn instance_of(pattern: &str, symbol: &str) -> bool {
    fn go(parts: &[&str], s: &str) -> bool {
        let Some((first, rest)) = parts.split_first() else {
            return s.is_empty();
        };
        let param = first.chars().any(|c| c.is_ascii_uppercase())
            && first.chars().all(|c| c.is_ascii_uppercase() || c == '_');
        if param {
            SUFFIXES
                .iter()
                .any(|x| s.strip_prefix(x).is_some_and(|s| go(rest, s)))
        } else {
            s.strip_prefix(first).is_some_and(|s| go(rest, s))
        }
    }
    let parts: Vec<&str> = pattern.split("##").collect();
    go(&parts, symbol)
}

/// The `.entry` names in a module's PTX.
fn ptx_entries(ptx: &str) -> BTreeSet<String> {
    ptx.lines()
        .filter_map(|l| l.split(".entry ").nth(1))
        .map(|rest| rest.split('(').next().unwrap().trim().to_string())
        .collect()
}

#[test]
fn every_kernel_file_belongs_to_one_family() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".cu").map(String::from)
        })
        .collect();
    let registered: BTreeSet<String> = FAMILIES.iter().map(|k| k.file.to_string()).collect();
    assert_eq!(
        registered.len(),
        FAMILIES.len(),
        "a kernel file listed twice"
    );
    assert_eq!(
        on_disk, registered,
        "kernels/*.cu against cuda::ops::FAMILIES"
    );
    for k in FAMILIES {
        let text = std::fs::read_to_string(dir.join(format!("{}.cu", k.file))).unwrap();
        assert_eq!(
            k.source, text,
            "{}: the compiled text is the file's",
            k.file
        );
        let symbols = k.symbols();
        let unique: BTreeSet<&String> = symbols.iter().collect();
        assert_eq!(unique.len(), symbols.len(), "{}: an entry twice", k.file);
        for e in k.entries {
            assert_eq!(
                e.file(),
                k.file,
                "an entry of {} names another file",
                k.file
            );
        }
    }
}

/// Source-level, without NVRTC: each kernel a file defines is declared by the
/// file's family, and each declared entry matches a kernel the file defines.
#[test]
fn every_defined_kernel_is_declared() {
    for k in FAMILIES {
        let patterns = defined_kernels(k.source);
        assert!(!patterns.is_empty(), "{}: no kernels found", k.file);
        let symbols = k.symbols();
        for p in &patterns {
            assert!(
                symbols.iter().any(|s| instance_of(p, s)),
                "kernels/{}.cu: kernel {p} is declared by no family (a dead kernel?)",
                k.file
            );
        }
        for s in &symbols {
            assert!(
                patterns.iter().any(|p| instance_of(p, s)),
                "kernels/{}.cu defines no kernel {s}, which the host may launch",
                k.file
            );
        }
    }
    assert!(instance_of("cast_##S_FROM##_##S_TO", "cast_f16_bf16"));
    assert!(!instance_of("add_##S", "add_f64"));
}

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
        // What a user's first process pays per file (the disk cache spares
        // the later ones), printed for sm_90.
        let mut seconds = Vec::new();
        for k in FAMILIES {
            let t0 = std::time::Instant::now();
            let out = compile_with_ptx(k.file, k.source, arch).unwrap_or_else(|e| panic!("{e}"));
            seconds.push((k.file, t0.elapsed().as_secs_f64()));
            assert!(
                out.cubin.starts_with(b"\x7fELF"),
                "{} for {arch}: a CUBIN is an ELF image",
                k.file
            );
            let entries = ptx_entries(&out.ptx);
            let declared: BTreeSet<String> = k.symbols().into_iter().collect();
            let missing: Vec<&String> = declared.difference(&entries).collect();
            assert!(
                missing.is_empty(),
                "kernels/{}.cu for {arch}: the host may launch {missing:?}, which the module lacks",
                k.file
            );
            let dead: Vec<&String> = entries.difference(&declared).collect();
            assert!(
                dead.is_empty(),
                "kernels/{}.cu for {arch}: {dead:?} declared by no family (dead kernels)",
                k.file
            );
        }
        if arch == "sm_90" {
            let total: f64 = seconds.iter().map(|s| s.1).sum();
            let each: Vec<String> = seconds.iter().map(|(f, t)| format!("{f} {t:.1}")).collect();
            println!(
                "NVRTC sm_90: {total:.1} s for {} files ({})",
                seconds.len(),
                each.join(", ")
            );
        }
    }
}
