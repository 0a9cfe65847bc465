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
        "cannot read or write /nonexistent/input.txt",
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
        "holds 0 tokens",
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
    fails_with(
        vec!["--data".into(), path],
        "cannot read or write /nonexistent/",
    );
}

#[test]
fn not_a_number() {
    // clap rejects it before headroom runs; still an error, not a panic.
    fails_with(os(&["--steps", "many"]), "invalid value 'many'");
}

#[test]
fn budget_trace_and_report() {
    let dir = std::env::temp_dir().join(format!("headroom-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (trace, metrics, svg) = (dir.join("t.json"), dir.join("m.jsonl"), dir.join("t.svg"));
    let args: Vec<std::ffi::OsString> = vec![
        "train".into(),
        "--steps".into(),
        "3".into(),
        "--batch".into(),
        "4".into(),
        "--budget".into(),
        "64MiB".into(),
        "--sample-tokens".into(),
        "0".into(),
        "--memory-trace".into(),
        trace.clone().into(),
        "--metrics-out".into(),
        metrics.clone().into(),
    ];
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = headroom(&refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("peak reserved"),
        "memory table printed: {stdout}"
    );
    let budget = 64u64 << 20;
    let mut steps = 0;
    for line in std::fs::read_to_string(&metrics).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(p) = v.get("peak_reserved_bytes") {
            steps += 1;
            assert!(p.as_u64().unwrap() <= budget, "{line}");
            assert!(
                v["reserved_bytes"].as_u64().unwrap() >= v["allocated_bytes"].as_u64().unwrap()
            );
        }
    }
    assert_eq!(steps, 3);
    let out = headroom(&[
        "report".as_ref(),
        trace.as_os_str(),
        "--out".as_ref(),
        svg.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    for phase in ["forward", "backward", "optimizer", "peak allocated"] {
        assert!(text.contains(phase), "the SVG shows {phase}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn budget_errors() {
    fails_with(os(&["--budget", "lots"]), "accepted forms");
    fails_with(os(&["--budget", "150%"]), "at most 100");
    fails_with(os(&["--budget", "1MiB"]), "below 2 MiB");
    fails_with(os(&["--budget", "1e3GiB"]), "exponent");
    fails_with(
        os(&["--budget", "3MiB"]),
        "no plan fits the budget of 3.00 MiB",
    );
    // The library's words are the API's; the CLI's are its flags.
    fails_with(os(&["--budget", "3MiB"]), "Raise the budget (--budget)");
}

#[test]
fn report_of_a_missing_or_bad_trace() {
    let out = headroom(&["report".as_ref(), "/nonexistent/t.json".as_ref()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read or write /nonexistent/t.json")
    );
    let f = std::env::temp_dir().join(format!("headroom-bad-trace-{}.json", std::process::id()));
    std::fs::write(&f, b"{\"not\": 1}").unwrap();
    let out = headroom(&["report".as_ref(), f.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a memory trace"),
        "{err}"
    );
    std::fs::remove_file(&f).unwrap();
}

fn run_args(args: &[&str]) -> Output {
    let v = os(args);
    let refs: Vec<&std::ffi::OsStr> = v.iter().map(|a| a.as_os_str()).collect();
    headroom(&refs)
}

#[test]
fn plan_answers_will_it_fit() {
    let args = [
        "plan",
        "--model",
        "gpt2-350m",
        "--batch",
        "16",
        "--seq",
        "512",
        "--json",
    ];
    let out = run_args(&[&args[..], &["--budget", "24GiB"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fits"], true);
    for key in [
        "micro_batch",
        "recompute",
        "predicted_peak_bytes",
        "budget_bytes",
        "candidates",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    assert!(v["predicted_peak_bytes"].as_u64().unwrap() <= 24 << 30);

    let out = run_args(&[&args[..], &["--budget", "3MiB"]].concat());
    assert!(!out.status.success(), "nothing fits: non-zero exit");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fits"], false);
    assert!(v["needed_bytes"].as_u64().unwrap() > 1 << 20);
}

/// GPT-2 XL on a 24 GB card: only with its AdamW state in host memory.
#[test]
fn plan_for_a_gpu_reaches_for_the_levers() {
    let out = run_args(&["plan", "--gpu", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    for name in [
        "h100-sxm",
        "h200",
        "a100-40gb",
        "a100-80gb",
        "l4",
        "rtx4090",
        "rtx4080",
        "rtx3090",
        "rtx3060",
    ] {
        assert!(list.contains(name), "{name} in {list}");
    }
    let args = [
        "plan",
        "--model",
        "gpt2-1558m",
        "--batch",
        "16",
        "--seq",
        "1024",
        "--gpu",
        "rtx4090",
        "--precision",
        "bf16",
        "--host-budget",
        "16GiB",
        "--json",
    ];
    let out = run_args(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["levers"], serde_json::json!(["offload-optimizer"]), "{v}");
    assert!(v["host_peak_bytes"].as_u64().unwrap() > 10 << 30);
    assert!(v["predicted_step_ms"].as_f64().unwrap() > 0.0);
    // 90% of the card's 24 GiB.
    assert!(v["predicted_peak_bytes"].as_u64().unwrap() <= v["budget_bytes"].as_u64().unwrap());
    assert_eq!(v["budget_bytes"].as_u64().unwrap(), (24u64 << 30) * 9 / 10);
    for (flag, bad, needle) in [
        ("--gpu", "rtx9090", "not in the catalog"),
        ("--optimizer-state", "4bit", "use f32, 8bit or auto"),
        ("--grad-clip", "nan", "--grad-clip"),
    ] {
        let out = run_args(&["plan", flag, bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{flag} {bad}: {err}"
        );
    }
}

#[test]
fn cuda_without_a_driver_is_a_clear_error() {
    if headroom::backend::cuda::available() {
        return; // a machine with CUDA: nothing to check here
    }
    fails_with(
        os(&["--backend", "cuda"]),
        "the cuda backend does not support this machine",
    );
}

/// `plan --memory-trace` writes the chosen plan's simulated trace; its peak is
/// the predicted peak, and `report` draws it.
#[test]
fn plan_writes_the_simulated_trace() {
    let dir = std::env::temp_dir().join(format!("headroom-plan-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (trace, svg) = (dir.join("p.json"), dir.join("p.svg"));
    let t = trace.to_str().unwrap();
    let out = run_args(&[
        "plan",
        "--batch",
        "8",
        "--budget",
        "64MiB",
        "--json",
        "--memory-trace",
        t,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = tr["events"].as_array().unwrap();
    assert!(!events.is_empty());
    let peak = events
        .iter()
        .map(|e| e["reserved"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(peak, plan["predicted_peak_bytes"].as_u64().unwrap());
    let out = run_args(&["report", t, "--out", svg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An llm.c shard (version 1: u16 ids) of `ids` at `path`.
fn write_shard(path: &std::path::Path, ids: &[u16]) {
    let mut h = vec![0i32; 256];
    h[0] = 20240520;
    h[1] = 1;
    h[2] = ids.len() as i32;
    let mut b: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.extend(ids.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_gpt2_token_shard_trains_and_an_id_past_the_vocabulary_is_refused() {
    let dir = std::env::temp_dir().join(format!("headroom-cli-shard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.bin");
    let ids: Vec<u16> = (0..4000u32).map(|i| (i * 7919 % 50257) as u16).collect();
    write_shard(&good, &ids);
    let args = [
        "train",
        "--data",
        "",
        "--tokenizer",
        "gpt2",
        "--vocab",
        "50257",
        "--steps",
        "2",
        "--batch",
        "2",
        "--seq",
        "16",
        "--eval-every",
        "0",
        "--sample-tokens",
        "4",
    ];
    let mut a = os(&args);
    a[2] = good.clone().into_os_string();
    let refs: Vec<&std::ffi::OsStr> = a.iter().map(|x| x.as_os_str()).collect();
    let out = headroom(&refs);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Without --vocab, the tiny preset's 256 ids cannot hold the shard's.
    fails_with(
        vec![
            "--data".into(),
            good.clone().into_os_string(),
            "--tokenizer".into(),
            "gpt2".into(),
        ],
        "not below the model's vocabulary of 256",
    );
    // Nor GPT-2's BPE of a text.
    fails_with(
        os(&["--tokenizer", "gpt2", "--steps", "1"]),
        "--vocab 50257",
    );
    let bad = dir.join("bad.bin");
    let mut ids = ids;
    ids[1234] = 60000;
    write_shard(&bad, &ids);
    let mut b = a.clone();
    b.remove(0);
    b[1] = bad.into_os_string();
    fails_with(b, "token 1234 (byte offset 3492) is id 60000");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_from_a_hugging_face_checkpoint_trains_and_exports_back() {
    let dir = std::env::temp_dir().join(format!("headroom-cli-hf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let shard = dir.join("ids.bin");
    let ids: Vec<u16> = (0..2000u32).map(|i| (i * 31 % 96) as u16).collect();
    write_shard(&shard, &ids);
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny");
    let ck = dir.join("ck");
    let run = |args: Vec<std::ffi::OsString>| {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|x| x.as_os_str()).collect();
        let out = headroom(&refs);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {err}");
    };
    let mut a = os(&[
        "train",
        "--steps",
        "2",
        "--batch",
        "2",
        "--seq",
        "8",
        "--eval-every",
        "0",
    ]);
    a.extend([
        "--sample-tokens".into(),
        "0".into(),
        "--init-from".into(),
        fixture.clone().into(),
    ]);
    a.extend([
        "--data".into(),
        shard.into(),
        "--checkpoint-dir".into(),
        ck.clone().into(),
    ]);
    run(a);
    let out = dir.join("hf");
    run(vec![
        "export".into(),
        "--checkpoint".into(),
        ck.into(),
        "--out".into(),
        out.clone().into(),
    ]);
    let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(cfg.contains("\"model_type\": \"gpt2\""), "{cfg}");
    assert!(out.join("model.safetensors").exists());
    // --model and --init-from both naming a model is refused.
    fails_with(
        vec![
            "--model".into(),
            "tiny".into(),
            "--init-from".into(),
            fixture.into(),
        ],
        "drop --model",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
