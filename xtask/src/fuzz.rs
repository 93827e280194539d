//! `cargo xtask fuzz`: every fuzz target of `netflow-agent/fuzz` for at
//! least a million executions (or a time budget), with libFuzzer's memory
//! and time limits, then the corpus minimized in place so it can be
//! committed. A crash input is copied to `fuzz/regressions/<target>/`, which
//! the test suite replays (`tests/fuzz_corpus.rs`), and fails the run.
//!
//! cargo-fuzz needs nightly flags; `RUSTC_BOOTSTRAP=1` lets the machine's
//! stable rustc take them. No sanitizer runtime is needed (`--sanitizer
//! none`): the code is safe Rust, and libFuzzer's own RSS watch bounds
//! memory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

/// The fuzz targets: the files of `fuzz_targets/` (the test suite checks
/// there is one per `netflow_agent::fuzzing::TARGETS` entry).
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem().and_then(|stem| stem.to_str())
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Memory a target may use (libFuzzer's `-rss_limit_mb`), and the largest
/// single allocation (`-malloc_limit_mb`).
const RSS_LIMIT_MB: u32 = 2048;
const MALLOC_LIMIT_MB: u32 = 512;
/// One input that takes longer than this is a hang.
const INPUT_TIMEOUT_S: u32 = 10;

pub struct Options {
    pub runs: u64,
    /// A time budget per target instead of (or before) `runs`.
    pub seconds: Option<u64>,
    pub only: Option<String>,
}

/// One target's run, as libFuzzer reported it.
struct Outcome {
    target: String,
    runs: u64,
    seconds: f64,
    peak_rss_mb: u64,
    corpus_files: usize,
}

pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = root.join("netflow-agent/fuzz");
    let mut targets = targets(&fuzz_dir)?;
    if let Some(name) = &options.only {
        if !targets.contains(name) {
            bail!("no fuzz target {name}: {}", targets.join(", "));
        }
        targets = vec![name.clone()];
    }
    cargo_fuzz(root, &["build", "-O"])?;
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(root, &fuzz_dir, &target, options)?);
    }
    println!("| target | executions | seconds | executions/s | peak RSS | corpus files |");
    println!("|---|---|---|---|---|---|");
    for outcome in &outcomes {
        println!(
            "| {} | {} | {:.0} | {:.0} | {} MB | {} |",
            outcome.target,
            outcome.runs,
            outcome.seconds,
            outcome.runs as f64 / outcome.seconds.max(0.001),
            outcome.peak_rss_mb,
            outcome.corpus_files
        );
    }
    Ok(())
}

fn run_target(
    root: &Path,
    fuzz_dir: &Path,
    target: &str,
    options: &Options,
) -> anyhow::Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let log = root.join(format!("target/fuzz/{target}.log"));
    let mut flags = vec![
        format!("-runs={}", options.runs),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
        format!("-timeout={INPUT_TIMEOUT_S}"),
        "-print_final_stats=1".to_string(),
    ];
    if let Some(seconds) = options.seconds {
        flags.push(format!("-max_total_time={seconds}"));
    }
    let artifacts = fuzz_dir.join("artifacts").join(target);
    fs::create_dir_all(&artifacts)?;
    flags.push(format!("-artifact_prefix={}/", artifacts.display()));
    eprintln!("xtask: fuzzing {target} ({})", flags.join(" "));
    let started = Instant::now();
    // The binary `cargo fuzz build` made, run as it is: `cargo fuzz run`
    // would build again with other settings.
    let binary = root
        .join("target/fuzz/x86_64-unknown-linux-gnu/release")
        .join(target);
    let result = run_logged(&binary, &flags, &corpus, &log);
    let seconds = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).unwrap_or_default();
    if let Err(err) = result {
        let saved = keep_crashes(fuzz_dir, target)?;
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{target} failed ({err:#}); crash inputs kept in {}:\n{}",
            saved.display(),
            tail.join("\n")
        );
    }
    minimize(&binary, &corpus)?;
    Ok(Outcome {
        target: target.to_string(),
        runs: stat(&text, "stat::number_of_executed_units:").unwrap_or(0),
        seconds,
        peak_rss_mb: stat(&text, "stat::peak_rss_mb:").unwrap_or(0),
        corpus_files: fs::read_dir(&corpus)?.count(),
    })
}

/// A `-print_final_stats` line's number.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix(name))
        .and_then(|value| value.trim().parse().ok())
}

/// Copies what libFuzzer left in `artifacts/<target>` to
/// `regressions/<target>`, where the test suite replays it.
fn keep_crashes(fuzz_dir: &Path, target: &str) -> anyhow::Result<PathBuf> {
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let regressions = fuzz_dir.join("regressions").join(target);
    fs::create_dir_all(&regressions)?;
    if let Ok(entries) = fs::read_dir(&artifacts) {
        for entry in entries {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                fs::copy(&path, regressions.join(name))?;
            }
        }
    }
    Ok(regressions)
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (crates.io)");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

/// `cargo fuzz ARGS` for the project's fuzz directory.
fn cargo_fuzz(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("cargo")
        .current_dir(root)
        .arg("fuzz")
        .args(args)
        .args([
            "--sanitizer",
            "none",
            "--fuzz-dir",
            "netflow-agent/fuzz",
            "--target-dir",
            "target/fuzz",
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .context("running cargo fuzz")?;
    if !status.success() {
        bail!("cargo fuzz {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs a fuzz target on `corpus` with libFuzzer `flags`, its (long)
/// output in `log`.
fn run_logged(binary: &Path, flags: &[String], corpus: &Path, log: &Path) -> anyhow::Result<()> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let status = Command::new(binary)
        .args(flags)
        .arg(corpus)
        .stderr(file.try_clone()?)
        .stdout(file)
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", binary.display());
    }
    Ok(())
}

/// Keeps the smallest part of `corpus` that covers the same code (libFuzzer's
/// merge into an empty directory), to commit.
fn minimize(binary: &Path, corpus: &Path) -> anyhow::Result<()> {
    let kept = corpus.with_extension("min");
    let _ = fs::remove_dir_all(&kept);
    fs::create_dir_all(&kept)?;
    let status = Command::new(binary)
        .arg("-merge=1")
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(&kept)
        .arg(corpus)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    if !status.success() {
        bail!("minimizing {} failed ({status})", corpus.display());
    }
    fs::remove_dir_all(corpus)?;
    fs::rename(&kept, corpus)?;
    Ok(())
}
