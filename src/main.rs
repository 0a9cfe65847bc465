//! The `headroom` command line.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Parser, Subcommand};
use indicatif::ProgressBar;

use headroom::Error;

mod cli;

use cli::{
    devices::DevicesArgs, export::ExportArgs, plan::PlanArgs, report::ReportArgs,
    sample::SampleArgs, train::TrainArgs,
};

#[derive(Parser)]
#[command(
    name = "headroom",
    version,
    about = "Train transformers without dying of out-of-memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GPT-2 or Llama (default: a tiny byte-level GPT on the bundled Shakespeare).
    Train(Box<TrainArgs>),
    /// Will this model fit this budget? Plans a step by simulation only: no GPU,
    /// no weights allocated.
    Plan(PlanArgs),
    /// List the devices headroom can train on.
    Devices(DevicesArgs),
    /// Generate text from a checkpoint.
    Sample(SampleArgs),
    /// Draw a memory trace (from `train --memory-trace`) as an SVG timeline.
    Report(ReportArgs),
    /// Write a checkpoint's weights for other tools (Hugging Face transformers).
    Export(ExportArgs),
}

fn main() -> ExitCode {
    quiet_wayland_probe();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Pipe(Box::new(LogWriter)))
        .init();
    let cli = Cli::parse();
    let (r, command) = match cli.command {
        Command::Train(a) => (cli::train::train(*a), "train"),
        Command::Report(a) => (cli::report::report(a), "report"),
        Command::Plan(a) => (cli::plan::plan(a), "plan"),
        Command::Sample(a) => (cli::sample::sample(a), "sample"),
        Command::Devices(a) => (cli::devices::devices(a), "devices"),
        Command::Export(a) => (cli::export::export(a), "export"),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted { .. }) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {}", cli_message(&e, command));
            ExitCode::FAILURE
        }
    }
}

/// The library's errors name its API; the CLI's user knows the flags.
const FLAGS: &[(&str, &str)] = &[
    ("TrainConfig::batch", "--batch"),
    ("TrainConfig::seq_len", "--seq"),
    ("TrainConfig::steps", "--steps"),
    ("TrainConfig::precision", "--precision"),
    ("AdamW::lr", "--lr"),
    ("Device::set_budget", "--budget"),
    ("Device::by_name", "--backend"),
    ("report step", "--step"),
    ("invalid budget:", "invalid --budget:"),
];

/// An error as the CLI prints it: flags for API names, and advice for the
/// command that failed.
fn cli_message(e: &Error, command: &str) -> String {
    let mut msg = e.to_string();
    for (api, flag) in FLAGS {
        msg = msg.replace(api, flag);
    }
    let advice = match (e, command) {
        (Error::NoValidCheckpoint { .. }, "sample") => {
            "; give --checkpoint a checkpoint directory (step-NNNNNNNN) or the --checkpoint-dir of a run"
        }
        (Error::BadTrace { .. }, "report") => "; give `headroom report` the file a --memory-trace wrote",
        _ => "",
    };
    msg + advice
}

/// The progress bar that log lines must not tear, while one is drawn.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Sends log lines through `bar` (hidden while a line prints), or straight to
/// stderr when `None`.
fn log_through(bar: Option<ProgressBar>) {
    if let Ok(mut b) = BAR.lock() {
        *b = bar;
    }
}

/// env_logger's output: each record on a line of its own, above the bar.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Probing wgpu adapters loads Mesa's window-system code, whose Wayland client
/// prints "XDG_RUNTIME_DIR is invalid or not set" on every command when the
/// variable is missing (a server, a container, CI). Compute needs no display:
/// point it at a private directory of our own. Done first in `main`, before
/// any thread exists to race the environment.
fn quiet_wayland_probe() {
    if !cfg!(target_os = "linux")
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_dir())
    {
        return;
    }
    let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("headroom-runtime-{uid}"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // Only a directory that is ours and private, as Wayland requires.
        let ok = std::fs::symlink_metadata(&dir).is_ok_and(|m| {
            m.is_dir() && m.uid().to_string() == uid && m.permissions().mode() & 0o077 == 0
        });
        if ok {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}
