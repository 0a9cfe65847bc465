//! Bad input on the command line: a clear `error:` line and a non-zero exit,
//! never a panic.

use std::process::{Command, Output};

fn headroom(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headroom"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the binary runs")
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.into()).collect()
}

/// Runs `train` with `args`, expects failure with a message containing `needle`.
fn fails_with(args: Vec<std::ffi::OsString>, needle: &str) {
    let mut all = vec![std::ffi::OsString::from("train")];
    all.extend(args);
    let refs: Vec<&std::ffi::OsStr> = all.iter().map(|a| a.as_os_str()).collect();
    let out = headroom(&refs);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure for {all:?}; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic for {all:?}: {err}");
    assert!(
        err.contains(needle),
        "stderr for {all:?} should mention {needle:?}: {err}"
    );
}

#[test]
fn missing_data_file() {
    fails_with(
        os(&["--data", "/nonexistent/input.txt"]),
        "cannot read /nonexistent/input.txt",
    );
}

#[test]
fn empty_data_file() {
    let dir = std::env::temp_dir().join(format!("headroom-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("empty.txt");
    std::fs::write(&f, b"").unwrap();
    fails_with(
        vec!["--data".into(), f.clone().into_os_string()],
        "holds 0 bytes",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_preset() {
    fails_with(
        os(&["--model", "gpt5"]),
        "unknown model preset 'gpt5'; choose one of: tiny",
    );
}

#[test]
fn zero_steps_and_batch() {
    fails_with(os(&["--steps", "0"]), "--steps");
    fails_with(os(&["--batch", "0"]), "--batch");
}

#[test]
fn sequence_longer_than_context() {
    fails_with(
        os(&["--seq", "4096"]),
        "longer than the model's context of 64",
    );
}

#[test]
fn unknown_backend() {
    fails_with(os(&["--backend", "tpu"]), "unknown backend 'tpu'");
}

#[cfg(unix)]
#[test]
fn non_utf8_path() {
    use std::os::unix::ffi::OsStringExt;
    let path = std::ffi::OsString::from_vec(b"/nonexistent/\xff\xfe.txt".to_vec());
    fails_with(vec!["--data".into(), path], "cannot read /nonexistent/");
}

#[test]
fn not_a_number() {
    // clap rejects it before headroom runs; still an error, not a panic.
    fails_with(os(&["--steps", "many"]), "invalid value 'many'");
}
