//! The wgpu shader registration (`backend::wgpu::ops::FAMILIES`) against the
//! files: every WGSL file in `shaders/` is registered once, by the family it is
//! named after, and declares exactly the `@compute` entry points it holds; the
//! op families are those of `src/graph/ops/`. That every declared entry exists
//! in every compiled variant (f32, f16, packed bf16) is checked in-crate with
//! naga (`pipeline::tests`) and on an adapter by `every_wgsl_kernel_compiles`
//! in backends.rs. No adapter is needed here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use headroom::backend::wgpu::ops::{Shader, FAMILIES};

/// Prepended to every shader rather than compiled alone, so not registered.
const PRELUDE: &str = "common";

fn dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The stems of the files in `rel` ending in `.ext`.
fn stems(rel: &str, ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir(rel))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn shaders() -> impl Iterator<Item = (&'static str, &'static Shader)> {
    FAMILIES
        .iter()
        .flat_map(|f| f.shaders.iter().map(move |s| (f.name, s)))
}

/// The `@compute` entry points of a WGSL text: `@compute`, any further
/// attributes, then `fn name`.
fn compute_entries(src: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"@compute\s+(?:@\w+\s*\([^)]*\)\s*)*fn\s+(\w+)").unwrap();
    re.captures_iter(src).map(|c| c[1].to_string()).collect()
}

#[test]
fn every_shader_file_is_registered_once_with_its_text() {
    let files: BTreeSet<String> = stems("shaders", "wgsl")
        .into_iter()
        .filter(|s| s != PRELUDE)
        .collect();
    let registered: Vec<&str> = shaders().map(|(_, s)| s.file).collect();
    let unique: BTreeSet<String> = registered.iter().map(|s| s.to_string()).collect();
    assert_eq!(unique.len(), registered.len(), "a file registered twice");
    assert_eq!(unique, files, "registered shaders vs shaders/*.wgsl");
    for (_, s) in shaders() {
        let text = std::fs::read_to_string(dir("shaders").join(format!("{}.wgsl", s.file)));
        assert_eq!(text.unwrap(), s.source, "{}: stale source", s.file);
    }
    let prelude = std::fs::read_to_string(dir("shaders").join(format!("{PRELUDE}.wgsl")));
    assert!(compute_entries(&prelude.unwrap()).is_empty());
}

#[test]
fn declared_entries_are_exactly_the_compute_entries() {
    for (_, s) in shaders() {
        let declared: BTreeSet<String> = s.entries.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            declared.len(),
            s.entries.len(),
            "{}: duplicate entry",
            s.file
        );
        assert_eq!(declared, compute_entries(s.source), "{}", s.file);
    }
}

#[test]
fn families_are_the_graph_op_families_in_every_backend() {
    // The op families are graph::ops's public modules; its private ones (the
    // op table, the routing) are not families.
    let root = env!("CARGO_MANIFEST_DIR");
    let list = std::fs::read_to_string(format!("{root}/src/graph/ops/mod.rs")).unwrap();
    let ops: BTreeSet<String> = list
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    // Every backend has one file per family, and nothing else, in its ops/.
    for backend in ["cpu", "cuda", "wgpu"] {
        let files: BTreeSet<String> = stems(&format!("src/backend/{backend}/ops"), "rs")
            .into_iter()
            .filter(|s| s != "mod")
            .collect();
        assert_eq!(files, ops, "src/backend/{backend}/ops");
    }
    let names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
    let families: BTreeSet<String> = names
        .iter()
        .filter(|&&n| n != "optim")
        .map(|n| n.to_string())
        .collect();
    assert_eq!(families, ops);
    assert_eq!(
        names.len(),
        families.len() + 1,
        "optim, and no family twice"
    );
    for (family, s) in shaders() {
        assert!(
            s.file.starts_with(family),
            "{}.wgsl is registered by {family}",
            s.file
        );
    }
}
