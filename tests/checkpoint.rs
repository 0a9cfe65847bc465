//! Checkpoints: exact resume, crash safety under SIGKILL, corruption fallback,
//! mismatch errors, and Ctrl-C through the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use headroom::checkpoint::{self, MODEL_FILE};
use headroom::data::Dataset;
use headroom::{AdamW, Device, Error, Gpt, GptConfig, Precision, TrainConfig, Trainer};

mod common;

fn small() -> GptConfig {
    common::gpt(2, 16, 16)
}

fn cfg() -> TrainConfig {
    TrainConfig {
        batch: 4,
        seq_len: 16,
        steps: 40,
        seed: 9,
        ..TrainConfig::default()
    }
}

fn trainer(c: GptConfig, t: TrainConfig) -> Trainer<Gpt> {
    Trainer::new(Device::cpu(), Gpt::new(c).unwrap(), AdamW::new(3e-3), t).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("headroom-ck-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// In f32, and in bf16, where resume rebuilds the weights' bf16 copies from
/// the master weights while a continuous run has AdamW write them: a copy that
/// drifted from its weights would make the two runs differ.
#[test]
fn resume_continues_bit_identically() {
    for precision in [Precision::F32, Precision::Bf16] {
        let cfg = || TrainConfig { precision, ..cfg() };
        let data = Dataset::bundled();
        let mut a = trainer(small(), cfg());
        let la: Vec<f32> = (0..40)
            .map(|_| {
                let b = a.next_batch(&data).unwrap();
                a.step(&b).unwrap().loss
            })
            .collect();

        let dir = tmp(&format!("resume-{precision}"));
        let mut b = trainer(small(), cfg());
        for _ in 0..17 {
            let batch = b.next_batch(&data).unwrap();
            b.step(&batch).unwrap();
        }
        b.save_checkpoint(dir.join(checkpoint::name_for(17)))
            .unwrap();
        drop(b);
        let mut c = trainer(small(), cfg());
        assert_eq!(c.resume(&dir).unwrap(), 17);
        let lc: Vec<f32> = (17..40)
            .map(|_| {
                let batch = c.next_batch(&data).unwrap();
                c.step(&batch).unwrap().loss
            })
            .collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&lc), bits(&la[17..]), "{precision}");
        assert!(c.parameters().unwrap() == a.parameters().unwrap());
        assert!(c.optimizer_state().unwrap() == a.optimizer_state().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A vocabulary padded for the logits GEMM (300 → 384): the padding rows of
/// the tied embedding and of its AdamW moments stay exactly zero through
/// training (weight decay included), the checkpoint holds GPT-2-shaped
/// [300, C] tensors (what a build without padding wrote, so those load
/// unchanged), and resume is still bit-identical.
#[test]
fn a_padded_vocabulary_resumes_bit_identically_from_unpadded_files() {
    let padded = GptConfig {
        vocab_size: 300,
        ..small()
    };
    assert_eq!(padded.padded_vocab(), 384);
    let c = padded.n_embd;
    let t = |c: &GptConfig| {
        let opt = AdamW {
            weight_decay: 0.1,
            ..AdamW::new(3e-3)
        };
        Trainer::new(Device::cpu(), Gpt::new(c.clone()).unwrap(), opt, cfg()).unwrap()
    };
    let data = Dataset::bundled();
    let mut a = t(&padded);
    let la: Vec<f32> = (0..12)
        .map(|_| {
            let b = a.next_batch(&data).unwrap();
            a.step(&b).unwrap().loss
        })
        .collect();
    let zero_padding = |tensors: Vec<headroom::HostTensor>| {
        for x in tensors {
            assert_eq!(x.shape.dims(), &[384, c]);
            let v = x.to_f64_vec();
            assert!(v[..300 * c].iter().any(|&x| x != 0.0));
            assert!(v[300 * c..].iter().all(|&x| x == 0.0), "padding rows moved");
        }
    };
    let wte = |t: &mut Trainer<Gpt>| {
        let p = t
            .parameters()
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "wte.weight");
        let (_, sm) = t
            .optimizer_state()
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "wte.weight")
            .unwrap();
        vec![p.unwrap().1, sm.m, sm.v]
    };
    zero_padding(wte(&mut a));

    let dir = tmp("padded");
    let mut b = t(&padded);
    for _ in 0..5 {
        let batch = b.next_batch(&data).unwrap();
        b.step(&batch).unwrap();
    }
    let path = dir.join(checkpoint::name_for(5));
    b.save_checkpoint(&path).unwrap();
    drop(b);
    let ck = checkpoint::load(&path).unwrap();
    let (_, w) = ck.params.iter().find(|(n, _)| n == "wte.weight").unwrap();
    assert_eq!(w.shape.dims(), &[300, c], "the file is GPT-2-shaped");
    let (m, v) = (&ck.moments["wte.weight"].m, &ck.moments["wte.weight"].v);
    assert_eq!(
        (m.shape.dims(), v.shape.dims()),
        (&[300, c][..], &[300, c][..])
    );
    let mut r = t(&padded);
    assert_eq!(r.resume(&dir).unwrap(), 5);
    let lr: Vec<f32> = (5..12)
        .map(|_| {
            let batch = r.next_batch(&data).unwrap();
            r.step(&batch).unwrap().loss
        })
        .collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&lr), bits(&la[5..]));
    assert!(r.parameters().unwrap() == a.parameters().unwrap());
    assert!(r.optimizer_state().unwrap() == a.optimizer_state().unwrap());
    zero_padding(wte(&mut r));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f16_resume_keeps_the_loss_scaler() {
    let data = Dataset::bundled();
    let dir = tmp("scaler");
    let c16 = TrainConfig {
        precision: Precision::F16,
        ..cfg()
    };
    let mut t = trainer(small(), c16.clone());
    t.inject_overflow_next_step();
    for _ in 0..3 {
        let b = t.next_batch(&data).unwrap();
        t.step(&b).unwrap();
    }
    t.save_checkpoint(dir.join("step-00000003")).unwrap();
    let mut u = trainer(small(), c16);
    u.resume(&dir).unwrap();
    assert_eq!(u.scaler(), t.scaler());
    assert_eq!(u.skipped_steps(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn save_steps(dir: &Path, steps: &[u64]) {
    let data = Dataset::bundled();
    let mut t = trainer(small(), cfg());
    for &s in steps {
        while t.steps_done() < s {
            let b = t.next_batch(&data).unwrap();
            t.step(&b).unwrap();
        }
        t.save_checkpoint(dir.join(checkpoint::name_for(s)))
            .unwrap();
    }
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    for damage in ["truncate", "flip", "manifest"] {
        let dir = tmp(&format!("corrupt-{damage}"));
        save_steps(&dir, &[2, 4]);
        let newest = dir.join(checkpoint::name_for(4));
        match damage {
            "truncate" => {
                let f = newest.join(MODEL_FILE);
                let len = std::fs::metadata(&f).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }
            "flip" => {
                let f = newest.join("optimizer.safetensors");
                let mut bytes = std::fs::read(&f).unwrap();
                let i = bytes.len() - 7;
                bytes[i] ^= 0x40;
                std::fs::write(&f, bytes).unwrap();
            }
            _ => std::fs::write(newest.join("manifest.json"), b"{ not json").unwrap(),
        }
        let ck = checkpoint::latest_valid(&dir)
            .unwrap()
            .expect("the older one is valid");
        assert_eq!(ck.manifest.step, 2, "{damage}: fell back to step 2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn no_valid_checkpoint_is_a_clear_error() {
    let dir = tmp("none-valid");
    save_steps(&dir, &[1]);
    std::fs::remove_file(dir.join(checkpoint::name_for(1)).join(MODEL_FILE)).unwrap();
    let e = checkpoint::latest_valid(&dir).err().expect("nothing valid");
    assert!(
        matches!(e, Error::NoValidCheckpoint { tried: 1, .. }),
        "{e}"
    );
    // An empty directory is no error: there is simply nothing to resume.
    assert!(checkpoint::latest_valid(&tmp("empty")).unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_into_another_model_or_precision_names_the_mismatch() {
    let dir = tmp("mismatch");
    save_steps(&dir, &[1]);
    let wider = GptConfig {
        n_embd: 32,
        ..small()
    };
    let e = trainer(wider, cfg()).resume(&dir).unwrap_err();
    assert!(e.to_string().contains("n_embd is 16 there, 32 here"), "{e}");
    let bf16 = TrainConfig {
        precision: Precision::Bf16,
        ..cfg()
    };
    let e = trainer(small(), bf16).resume(&dir).unwrap_err();
    assert!(e.to_string().contains("trained in f32"), "{e}");
    let vocab = GptConfig {
        vocab_size: 300,
        ..small()
    };
    let e = trainer(vocab, cfg()).resume(&dir).unwrap_err();
    assert!(
        e.to_string().contains("vocab_size is 256 there, 300 here"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_twice_at_one_step_replaces_the_checkpoint_whole() {
    let dir = tmp("replace");
    save_steps(&dir, &[3]);
    save_steps(&dir, &[3]);
    assert_eq!(checkpoint::list(&dir).unwrap().len(), 1);
    assert!(checkpoint::load(&dir.join(checkpoint::name_for(3))).is_ok());
    checkpoint::prune(&dir, 3).unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![checkpoint::name_for(3)],
        "no temporary leftovers"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn headroom() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_headroom"));
    c.env("RUST_LOG", "warn");
    c
}

const SMALL_RUN: [&str; 12] = [
    "train",
    "--batch",
    "2",
    "--seq",
    "16",
    "--sample-tokens",
    "0",
    "--eval-every",
    "0",
    "--seed",
    "3",
    "--keep-checkpoints",
];

#[cfg(unix)]
#[test]
fn sigkill_during_saves_never_leaves_a_partial_checkpoint() {
    let dir = tmp("sigkill");
    let mut found = 0;
    for i in 0..24u64 {
        let mut child = headroom()
            .args(SMALL_RUN)
            .args([
                "2",
                "--steps",
                "100000",
                "--checkpoint-every",
                "1",
                "--checkpoint-dir",
            ])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a different moment each time: saves happen every step, so the
        // kills land before, inside and between them.
        std::thread::sleep(Duration::from_millis(150 + 37 * i));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        match checkpoint::latest_valid(&dir) {
            Ok(Some(ck)) => {
                found += 1;
                assert!(ck.manifest.step >= 1);
                assert!(ck
                    .path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("step-"));
            }
            Ok(None) => {}
            Err(e) => panic!("kill {i}: the directory does not resume: {e}"),
        }
    }
    assert!(found > 0, "some saves completed");
    // And the CLI resumes from what is there.
    let out = headroom()
        .args(SMALL_RUN)
        .args(["2", "--steps", "1", "--resume", "--checkpoint-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn losses(path: &Path) -> Vec<(u64, u32)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                (v["loss"].as_f64().unwrap() as f32).to_bits(),
            )
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_and_resume_continues_exactly() {
    let (d1, d2) = (tmp("ctrlc-full"), tmp("ctrlc-split"));
    let run = |dir: &Path, extra: &[&str]| {
        // Steps long enough (batch 8 × 64) that the run cannot finish all 40
        // between the poll that sees step 12 and the signal arriving.
        let mut c = headroom();
        c.args([
            "train",
            "--batch",
            "8",
            "--seq",
            "64",
            "--sample-tokens",
            "0",
        ])
        .args([
            "--eval-every",
            "0",
            "--seed",
            "3",
            "--keep-checkpoints",
            "3",
        ])
        .args(["--steps", "40", "--checkpoint-dir"])
        .arg(dir)
        .args(extra);
        c
    };
    let m1 = d1.join("m.jsonl");
    let out = run(&d1, &["--metrics-out", m1.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let m2 = d2.join("m.jsonl");
    let child = run(&d2, &["--metrics-out", m2.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while losses(&m2).len() < 12 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run makes progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("--resume"), "says how to resume: {err}");
    let stopped = losses(&m2).len() as u64;
    assert!(stopped < 40, "stopped part-way ({stopped})");
    let ck = checkpoint::latest_valid(&d2).unwrap().unwrap();
    assert_eq!(ck.manifest.step, stopped, "saved at the step it stopped");

    let out = run(&d2, &["--metrics-out", m2.to_str().unwrap(), "--resume"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(losses(&m2), losses(&m1), "every step's loss, bit for bit");
    let final1 = std::fs::read(d1.join(checkpoint::name_for(40)).join(MODEL_FILE)).unwrap();
    let final2 = std::fs::read(d2.join(checkpoint::name_for(40)).join(MODEL_FILE)).unwrap();
    assert!(final1 == final2, "identical final weights");
    std::fs::remove_dir_all(&d1).unwrap();
    std::fs::remove_dir_all(&d2).unwrap();
}

#[test]
fn sample_reads_a_checkpoint() {
    let dir = tmp("sample");
    let out = headroom()
        .args(SMALL_RUN)
        .args(["2", "--steps", "2", "--checkpoint-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = headroom()
        .args([
            "sample",
            "--prompt",
            "ROMEO:",
            "--tokens",
            "20",
            "--checkpoint",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ROMEO:"));
    let out = headroom()
        .args(["sample", "--checkpoint", "/nonexistent/ck"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no valid checkpoint"));
    std::fs::remove_dir_all(&dir).unwrap();
}
