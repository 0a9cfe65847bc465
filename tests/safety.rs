//! Nothing a user types can lose their data or their run: the CLI against
//! careless inputs, full disks, read-only directories, devices, symlinks and a
//! second run on the same checkpoint directory. Cases that need root (mknod,
//! tmpfs mounts) print why they are skipped elsewhere.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use headroom::data::Batch;
use headroom::memory::Budget;
use headroom::{AdamW, Device, Error, Gpt, GptConfig, TrainConfig, Trainer};

/// A fresh directory for one test, removed (and unmounted) when dropped.
struct TempDir(PathBuf, Vec<PathBuf>);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("headroom-safety-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p, Vec::new())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// A tmpfs of `kib` KiB at `name` (with `opts` such as `ro`), or why not.
    fn tmpfs(&mut self, name: &str, kib: u64, opts: &str) -> Result<PathBuf, String> {
        let p = self.path(name);
        fs::create_dir_all(&p).unwrap();
        let o = format!(
            "size={kib}k{}{opts}",
            if opts.is_empty() { "" } else { "," }
        );
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &o, "tmpfs"])
            .arg(&p)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.1.push(p.clone());
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        for m in self.1.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next().map(|u| u == "0"))
            .unwrap_or(false)
    })
}

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_headroom"));
    c.env("RUST_LOG", "warn")
        .env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

fn run(args: &[OsString]) -> Output {
    cli().args(args).output().expect("the binary runs")
}

fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

/// A quick `train` on the tiny model and a 33 KB data file, plus `extra`.
fn train_args(data: &Path, extra: &[OsString]) -> Vec<OsString> {
    let mut v = args(&[
        "train",
        "--backend",
        "cpu",
        "--steps",
        "2",
        "--batch",
        "4",
        "--eval-every",
        "0",
        "--sample-tokens",
        "0",
        "--data",
    ]);
    v.push(data.into());
    v.extend(extra.iter().cloned());
    v
}

fn data_file(dir: &TempDir) -> PathBuf {
    let p = dir.path("data.txt");
    fs::write(&p, &headroom::data::TINY_SHAKESPEARE[..33_000]).unwrap();
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn error_line(o: &Output) -> String {
    let e = stderr(o);
    e.lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("")
        .to_string()
}

/// Asserts a typed failure: exit 1, an `error:` line with `needle`, no panic.
fn fails_with(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1; stderr: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
    assert!(
        error_line(o).contains(needle),
        "error line should mention {needle:?}: {e}"
    );
}

fn step_lines(metrics: &Path) -> usize {
    fs::read_to_string(metrics)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"loss\""))
        .count()
}

fn checkpoints(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with("step-") || n.starts_with(".tmp-") || n.starts_with(".old-")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn metrics_out_on_the_data_file_leaves_it_untouched() {
    let d = TempDir::new("metrics-data");
    let data = data_file(&d);
    let before = fs::read(&data).unwrap();
    let o = run(&train_args(
        &data,
        &[OsString::from("--metrics-out"), data.clone().into()],
    ));
    fails_with(&o, "refusing to write --metrics-out");
    assert!(
        error_line(&o).contains("--data"),
        "names both: {}",
        error_line(&o)
    );
    assert_eq!(fs::read(&data).unwrap(), before, "the data file changed");
    // Through a symlink, and as the memory trace, too.
    #[cfg(unix)]
    {
        let link = d.path("link.jsonl");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        for flag in ["--metrics-out", "--memory-trace"] {
            let o = run(&train_args(&data, &[flag.into(), link.clone().into()]));
            fails_with(&o, &format!("refusing to write {flag}"));
        }
        assert_eq!(fs::read(&data).unwrap(), before);
    }
}

#[cfg(unix)]
#[test]
fn a_symlinked_memory_trace_and_report_write_through_the_link() {
    let d = TempDir::new("symlink");
    let data = data_file(&d);
    let target = d.path("real-trace.json");
    fs::write(&target, b"old").unwrap();
    let link = d.path("trace.json");
    std::os::unix::fs::symlink("real-trace.json", &link).unwrap();
    let o = run(&train_args(
        &data,
        &["--memory-trace".into(), link.clone().into()],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    let t: serde_json::Value = serde_json::from_slice(&fs::read(&target).unwrap()).unwrap();
    assert!(!t["events"].as_array().unwrap().is_empty());

    let svg = d.path("real.svg");
    let svg_link = d.path("t.svg");
    std::os::unix::fs::symlink("real.svg", &svg_link).unwrap();
    let mut a = args(&["report"]);
    a.extend([link.clone().into(), "--out".into(), svg_link.clone().into()]);
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::symlink_metadata(&svg_link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::read_to_string(&svg).unwrap().contains("<svg"));
    // The report never writes over the trace it reads.
    let mut a = args(&["report"]);
    a.extend([target.clone().into(), "--out".into(), link.clone().into()]);
    fails_with(&run(&a), "refusing to write the report");
    assert!(fs::read(&target).unwrap().starts_with(b"{"));
}

#[cfg(unix)]
#[test]
fn a_character_device_stays_a_character_device() {
    use std::os::unix::fs::FileTypeExt;
    if !is_root() {
        return skip(
            "a_character_device_stays_a_character_device",
            "mknod needs root",
        );
    }
    let d = TempDir::new("chardev");
    let data = data_file(&d);
    let dev = d.path("null");
    let ok = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status();
    if !ok.is_ok_and(|s| s.success()) {
        return skip(
            "a_character_device_stays_a_character_device",
            "mknod failed here",
        );
    }
    let o = run(&train_args(
        &data,
        &["--memory-trace".into(), dev.clone().into()],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        fs::metadata(&dev).unwrap().file_type().is_char_device(),
        "replaced by a file"
    );
}

#[test]
fn a_full_disk_leaves_no_temporary_file() {
    let mut d = TempDir::new("enospc");
    let data = data_file(&d);
    let mnt = match d.tmpfs("small", 64, "") {
        Ok(p) => p,
        Err(why) => return skip("a_full_disk_leaves_no_temporary_file", &why),
    };
    let trace = mnt.join("trace.json");
    let o = run(&train_args(
        &data,
        &["--memory-trace".into(), trace.clone().into()],
    ));
    fails_with(&o, "No space left on device");
    let left: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn an_unusable_checkpoint_dir_fails_before_step_one() {
    let mut d = TempDir::new("ckdir");
    let data = data_file(&d);
    let metrics = d.path("m.jsonl");
    let with = |ck: &Path| {
        train_args(
            &data,
            &[
                "--checkpoint-dir".into(),
                ck.into(),
                "--metrics-out".into(),
                metrics.clone().into(),
            ],
        )
    };
    // A regular file.
    let file = d.path("not-a-dir");
    fs::write(&file, b"keep me").unwrap();
    fails_with(&run(&with(&file)), "is not a directory");
    assert_eq!(fs::read(&file).unwrap(), b"keep me");
    assert_eq!(step_lines(&metrics), 0, "a step ran before the failure");
    // Full: less room than two checkpoints of the tiny model (~2.6 MiB each).
    match d.tmpfs("full", 1024, "") {
        Ok(mnt) => {
            fails_with(
                &run(&with(&mnt.join("ck"))),
                "two checkpoints of this model need",
            );
            assert_eq!(step_lines(&metrics), 0);
        }
        Err(why) => skip(
            "an_unusable_checkpoint_dir_fails_before_step_one (full)",
            &why,
        ),
    }
    // Read-only: a read-only mount as root (permissions do not stop root), a
    // read-only directory otherwise.
    let ro = if is_root() {
        d.tmpfs("ro", 1024, "ro").ok()
    } else {
        let p = d.path("ro");
        fs::create_dir_all(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o555)).unwrap();
        }
        Some(p)
    };
    match ro {
        Some(ro) => {
            fails_with(&run(&with(&ro)), "a file cannot be created in it");
            assert_eq!(step_lines(&metrics), 0);
        }
        None => skip(
            "an_unusable_checkpoint_dir_fails_before_step_one (read-only)",
            "no read-only mount",
        ),
    }
}

/// `a` with its `--steps` set to `n`.
fn with_steps(mut a: Vec<OsString>, n: &str) -> Vec<OsString> {
    let pos = a.iter().position(|x| x == "--steps").unwrap();
    a[pos + 1] = n.into();
    a
}

fn spawn_training(data: &Path, ck: &Path, steps: &str) -> Child {
    let a = with_steps(spawn_args(data, ck), steps);
    cli()
        .args(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `ck`'s lock file names `pid`.
fn wait_for_lock(ck: &Path, pid: u32) {
    let lock = ck.join(headroom::checkpoint::LOCK_FILE);
    let t = Instant::now();
    while fs::read_to_string(&lock).unwrap_or_default().trim() != pid.to_string() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_run_on_a_locked_directory_fails_at_once() {
    let d = TempDir::new("lock");
    let data = data_file(&d);
    let ck = d.path("ck");
    let first = spawn_training(&data, &ck, "300");
    wait_for_lock(&ck, first.id());
    let t = Instant::now();
    let second = cli().args(spawn_args(&data, &ck)).output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the second run did not fail at once"
    );
    fails_with(
        &second,
        &format!("another run (PID {}) is using it", first.id()),
    );
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first run was disturbed: {}",
        stderr(&out)
    );
    assert_eq!(checkpoints(&ck), vec!["step-00000300"]);
    // It resumes from its own checkpoint.
    let mut a = with_steps(spawn_args(&data, &ck), "302");
    a.push("--resume".into());
    let o = cli().args(&a).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("trained 2 steps (resumed at step 300)"));
}

fn spawn_args(data: &Path, ck: &Path) -> Vec<OsString> {
    train_args(data, &["--checkpoint-dir".into(), ck.into()])
}

#[cfg(unix)]
#[test]
fn a_lock_left_by_a_killed_run_is_taken_over() {
    let d = TempDir::new("stale-lock");
    let data = data_file(&d);
    let ck = d.path("ck");
    let mut first = spawn_training(&data, &ck, "100000");
    wait_for_lock(&ck, first.id());
    first.kill().unwrap(); // SIGKILL: no chance to clean up
    first.wait().unwrap();
    assert!(
        ck.join(headroom::checkpoint::LOCK_FILE).exists(),
        "the stale lock file stays"
    );
    let o = cli().args(spawn_args(&data, &ck)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(checkpoints(&ck), vec!["step-00000002"]);
}

#[test]
fn a_periodic_save_that_runs_out_of_space_keeps_the_last_good_checkpoint() {
    let mut d = TempDir::new("periodic-enospc");
    let data = data_file(&d);
    // The size of one checkpoint of this model, from a save on a roomy disk.
    let roomy = d.path("roomy");
    let o = run(&train_args(
        &data,
        &["--checkpoint-dir".into(), roomy.clone().into()],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let one = dir_bytes(&roomy.join("step-00000002"));
    // Room for two and a half: the preflight (two) passes, the third save fails.
    let kib = (one * 5 / 2) / 1024;
    let mnt = match d.tmpfs("disk", kib, "") {
        Ok(p) => p,
        Err(why) => return skip("a_periodic_save_that_runs_out_of_space_...", &why),
    };
    let ck = mnt.join("ck");
    let metrics = d.path("m.jsonl");
    let mut a = train_args(
        &data,
        &[
            "--checkpoint-dir".into(),
            ck.clone().into(),
            "--metrics-out".into(),
            metrics.clone().into(),
        ],
    );
    a.extend(args(&[
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "3",
    ]));
    let o = run(&with_steps(a, "4"));
    let e = stderr(&o);
    // Step 3's save fails and warns; step 4 still trains; the final save fails
    // too, and the error names the newest valid checkpoint.
    assert!(e.contains("saving the checkpoint of step 3 failed"), "{e}");
    assert!(e.contains("Training continues"), "{e}");
    assert_eq!(
        step_lines(&metrics),
        4,
        "the run did not continue after the failed save"
    );
    fails_with(&o, "saving the checkpoint of step 4 failed");
    assert!(
        error_line(&o).contains("the newest valid checkpoint is"),
        "{e}"
    );
    assert!(error_line(&o).contains("step-00000002"), "{e}");
    assert_eq!(
        checkpoints(&ck),
        vec!["step-00000001", "step-00000002"],
        "partial saves left"
    );
    // That checkpoint resumes (copied to a disk with room).
    let again = d.path("again");
    fs::create_dir_all(again.join("step-00000002")).unwrap();
    for f in fs::read_dir(ck.join("step-00000002")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), again.join("step-00000002").join(f.file_name())).unwrap();
    }
    let a = train_args(
        &data,
        &["--checkpoint-dir".into(), again.into(), "--resume".into()],
    );
    let o = run(&with_steps(a, "3"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("trained 1 steps (resumed at step 2)"));
}

#[cfg(unix)]
#[test]
fn dev_zero_as_data_fails_at_once() {
    let t = Instant::now();
    let mut a = args(&["train", "--backend", "cpu", "--data", "/dev/zero"]);
    a.extend(args(&["--steps", "1"]));
    let o = run(&a);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    fails_with(&o, "is not a regular file");
}

/// Runs the CLI and returns its output and peak resident memory in bytes
/// (from `wait4`, for this child alone).
#[cfg(target_os = "linux")]
// `wait4` below reaps the child itself: `Child::wait` cannot report its rusage.
#[allow(clippy::zombie_processes)]
fn run_measured(a: &[OsString]) -> (i32, String, u64) {
    let child = cli()
        .args(a)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut err = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data, and pid is our own child, not yet waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, reader.join().unwrap(), usage.ru_maxrss as u64 * 1024)
}

#[cfg(target_os = "linux")]
#[test]
fn a_batch_of_four_billion_is_a_typed_error_in_little_memory() {
    for cmd in ["train", "plan"] {
        let mut a = args(&[cmd, "--batch", "4294967296"]);
        if cmd == "train" {
            a.extend(args(&["--backend", "cpu"]));
        }
        let (code, err, rss) = run_measured(&a);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains("error: invalid --batch"), "{cmd}: {err}");
        assert!(err.contains("tokens a step may hold"), "{cmd}: {err}");
        assert!(rss < 200 << 20, "{cmd}: peak resident {} MiB", rss >> 20);
        println!(
            "{cmd} --batch 4294967296: exit {code}, peak resident {:.1} MiB",
            rss as f64 / (1 << 20) as f64
        );
    }
}

/// A 2-step run with a checkpoint directory and metrics; returns its temp dir,
/// checkpoint directory, metrics file and arguments (to resume with).
fn two_checkpointed_steps(name: &str) -> (TempDir, PathBuf, PathBuf, Vec<OsString>) {
    let d = TempDir::new(name);
    let data = data_file(&d);
    let ck = d.path("ck");
    let metrics = d.path("m.jsonl");
    let a = train_args(
        &data,
        &[
            "--checkpoint-dir".into(),
            ck.clone().into(),
            "--metrics-out".into(),
            metrics.clone().into(),
        ],
    );
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    (d, ck, metrics, a)
}

#[test]
fn resuming_a_finished_run_changes_nothing() {
    let (_d, ck, metrics, a) = two_checkpointed_steps("finished");
    let model = ck.join("step-00000002").join("model.safetensors");
    let before = (
        fs::read(&model).unwrap(),
        fs::metadata(&model).unwrap().modified().unwrap(),
    );
    let metrics_before = fs::read(&metrics).unwrap();
    let mut again = a.clone();
    again.push("--resume".into());
    let o = run(&again);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("already holds step 2"), "{out}");
    assert!(!out.contains("NaN") && !out.contains("0 tokens/s"), "{out}");
    let after = (
        fs::read(&model).unwrap(),
        fs::metadata(&model).unwrap().modified().unwrap(),
    );
    assert_eq!(before, after, "the checkpoint was rewritten");
    assert_eq!(
        fs::read(&metrics).unwrap(),
        metrics_before,
        "the metrics changed"
    );
}

#[test]
fn data_inside_a_checkpoint_is_refused_before_pruning_could_delete_it() {
    let (d, ck, _, _) = two_checkpointed_steps("data-in-checkpoint");
    let inside = ck.join("step-00000002").join("mydata.txt");
    fs::copy(d.path("data.txt"), &inside).unwrap();
    let a = train_args(&inside, &["--checkpoint-dir".into(), ck.clone().into()]);
    let a = with_steps(a, "4");
    fails_with(&run(&a), "lies inside the checkpoint");
    assert!(inside.exists(), "the data file was deleted");
}

#[test]
fn a_new_run_in_a_used_directory_is_refused_and_prunes_nothing() {
    let (d, ck, _, _) = two_checkpointed_steps("used-dir");
    let before = fs::read(ck.join("step-00000002/model.safetensors")).unwrap();
    let a = train_args(
        &d.path("data.txt"),
        &["--checkpoint-dir".into(), ck.clone().into()],
    );
    let o = run(&with_steps(a, "1"));
    fails_with(&o, "holds checkpoints of an earlier run");
    assert!(error_line(&o).contains("--resume"), "{}", error_line(&o));
    assert_eq!(checkpoints(&ck), vec!["step-00000002"]);
    assert_eq!(
        fs::read(ck.join("step-00000002/model.safetensors")).unwrap(),
        before
    );
}

#[test]
fn outputs_named_two_ways_are_one_file() {
    let d = TempDir::new("two-ways");
    let data = data_file(&d);
    let m = d.path("m.json");
    let same = d.0.join(".").join("m.json");
    let o = run(&train_args(
        &data,
        &[
            "--metrics-out".into(),
            m.into(),
            "--memory-trace".into(),
            same.into(),
        ],
    ));
    fails_with(&o, "names the same file as --metrics-out");
}

#[cfg(target_os = "linux")]
#[test]
fn metrics_to_standard_output_go_down_the_pipe() {
    let d = TempDir::new("stdout");
    let data = data_file(&d);
    let o = run(&train_args(
        &data,
        &["--metrics-out".into(), "/dev/stdout".into()],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.lines().filter(|l| l.contains("\"loss\"")).count(),
        2,
        "{out}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_device_needs_no_write_access_to_its_directory() {
    // As a user who cannot create files in /dev: root must drop to nobody.
    let d = TempDir::new("device-user");
    let mut cmd = if is_root() {
        let bin = d.path("headroom");
        fs::copy(env!("CARGO_BIN_EXE_headroom"), &bin).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_headroom"))
    };
    cmd.current_dir("/").env("RUST_LOG", "error");
    let o = match cmd.args(["plan", "--memory-trace", "/dev/null"]).output() {
        Ok(o) => o,
        Err(e) => {
            return skip(
                "a_device_needs_no_write_access_to_its_directory",
                &e.to_string(),
            )
        }
    };
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_partial_resume_marks_the_metrics_and_counts_its_own_steps() {
    let (_d, _, metrics, a) = two_checkpointed_steps("partial");
    let mut again = with_steps(a.clone(), "5");
    again.push("--resume".into());
    let o = run(&again);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("trained 3 steps (resumed at step 2)"));
    let lines: Vec<serde_json::Value> = fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines
        .iter()
        .filter(|v| v.get("loss").is_some())
        .filter_map(|v| v["step"].as_u64())
        .collect();
    // The first run's two steps and its final evaluation, then the marker.
    assert_eq!(
        lines[3],
        serde_json::json!({"resumed_at_step": 2}),
        "{lines:?}"
    );
    let markers = lines.iter().filter(|v| v.get("resumed_at_step").is_some());
    assert_eq!(markers.count(), 1);
    assert!(steps == [1, 2, 3, 4, 5], "{steps:?}");
}

#[test]
fn resuming_on_other_data_is_refused_unless_asked() {
    let d = TempDir::new("other-data");
    let data = data_file(&d);
    let other = d.path("other.txt");
    fs::write(&other, &headroom::data::TINY_SHAKESPEARE[40_000..70_000]).unwrap();
    let ck = d.path("ck");
    assert!(run(&train_args(
        &data,
        &["--checkpoint-dir".into(), ck.clone().into()]
    ))
    .status
    .success());
    let a = train_args(
        &other,
        &[
            "--checkpoint-dir".into(),
            ck.clone().into(),
            "--resume".into(),
        ],
    );
    let mut a = with_steps(a, "3");
    let o = run(&a);
    fails_with(&o, "does not match this run");
    assert!(error_line(&o).contains("data.txt") && error_line(&o).contains("other.txt"));
    a.push("--allow-data-change".into());
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("continuing on the new data"));
}

#[test]
fn messages_speak_to_the_command_that_failed() {
    let d = TempDir::new("messages");
    let data = data_file(&d);
    let mut a = args(&["report"]);
    a.push(data.clone().into());
    let o = run(&a);
    fails_with(&o, "memory trace");
    assert!(!error_line(&o).contains("data set"), "{}", error_line(&o));
    let o = run(&args(&["sample", "--checkpoint", "/nonexistent/dir"]));
    fails_with(&o, "it does not exist");
    assert!(!error_line(&o).contains("--resume"), "{}", error_line(&o));
    assert!(error_line(&o).contains("give --checkpoint"));
    let o = run(&train_args(&data, &["--budget".into(), "1e3GiB".into()]));
    fails_with(&o, "exponent");
    let o = run(&args(&["plan", "--budget", "18446744073709551616"]));
    fails_with(&o, "beyond 16 EiB");
    let o = run(&args(&["plan", "--budget", "100TiB"]));
    assert!(o.status.success());
    assert!(stderr(&o).contains("more than the"), "{}", stderr(&o));
}

// The library's side of the same promises.

#[test]
fn the_library_plans_before_it_allocates() {
    let mut device = Device::cpu();
    device.set_budget(Some(Budget::Bytes(3 << 20)));
    let cfg = TrainConfig {
        batch: 8,
        seq_len: 32,
        ..Default::default()
    };
    let r = Trainer::new(
        device,
        Gpt::new(GptConfig::tiny()).unwrap(),
        AdamW::new(1e-3),
        cfg,
    );
    let Err(e) = r else {
        panic!("a 3 MiB budget fits nothing")
    };
    assert!(matches!(e, Error::NoPlanFits { .. }), "{e}");
    assert!(e.to_string().contains("Device::set_budget"), "{e}");
}

#[test]
fn errors_debug_print_their_message() {
    let e = Budget::parse("1e3GiB").unwrap_err();
    let debug = format!("{e:?}");
    assert_eq!(debug, e.to_string(), "fn main() -> Result<()> prints this");
    assert!(!debug.contains("InvalidArgument {"));
}

#[test]
fn a_hand_built_batch_of_the_wrong_size_is_a_shape_error() {
    let cfg = TrainConfig {
        batch: 2,
        seq_len: 8,
        ..Default::default()
    };
    let mut t = Trainer::new(
        Device::cpu(),
        Gpt::new(GptConfig::tiny()).unwrap(),
        AdamW::new(1e-3),
        cfg,
    )
    .unwrap();
    let bad = Batch::tokens(2, 8, vec![0; 15], vec![0; 16]);
    let e = t.step(&bad).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "batch", .. }), "{e}");
}
