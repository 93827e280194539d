//! Build and test orchestration: `cargo xtask <command>`.
//!
//! - `setup`: installs what building and testing need (Debian packages and
//!   bpf-linker, as `docs/toolchain.md` explains). A second run finds
//!   everything in place and installs nothing.
//! - `demo`: the main job: setup, release build, the image, then the lab on
//!   examples/shop.yaml with each node's agent running from the image.
//! - `test`: setup, format, lint and layering checks, then every test (the
//!   root-only ones included; with `CI=true` they fail rather than skip).
//! - `bench`: setup, release build, then the overhead benchmark.
//! - `fuzz`: every parser's fuzz target, a million executions each (`fuzz`).
//! - `soak`: the agent for N minutes under connection and pod churn.
//! - `image`: the agent's OCI image archive, without a registry (`image`).

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod fuzz;
mod image;
mod layers;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain and tools (idempotent).
    Setup {
        /// Only what building the agent needs (the Containerfile's build
        /// stage): no lab or test tools.
        #[arg(long)]
        build_only: bool,
    },
    /// Build the agent (with its eBPF object) and the lab with the release
    /// profile, linked as one unit (`target/dist`).
    Build,
    /// The main job: the lab on examples/shop.yaml (simulated cluster, the agents from the image, recording, graph).
    Demo,
    /// Format check, clippy, and every test.
    Test,
    /// Build the agent's OCI image archive (no registry, no base image).
    Image {
        /// The archive to write.
        #[arg(long, default_value = "target/netflow-agent-oci.tar")]
        out: PathBuf,
        /// Write the image's root filesystem into this directory instead
        /// (the Containerfile's last stage copies it).
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// The image reference the archive names.
        #[arg(long, default_value = "netflow-agent:0.1.0")]
        reference: String,
    },
    /// Measure netflow's overhead against no program and against tcpdump.
    Bench {
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The agent for a long run under steady new connections and pod churn
    /// (memory, CPU, table, polls every minute).
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
    },
    /// Fuzz every parser of outside data (cargo-fuzz, libFuzzer), then
    /// minimize each corpus for committing.
    Fuzz {
        /// Executions per target.
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
        /// Stop each target after this many seconds even if short of --runs.
        #[arg(long)]
        seconds: Option<u64>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
}

/// Debian packages the build needs whatever the LLVM version.
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Debian packages the lab and the tests need.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "tcpdump",
    "util-linux",
    "iptables",
    "dnsmasq-base",
    // The container test: the image under containerd and runc, and under
    // podman's (CRI-O's) default seccomp profile.
    "containerd",
    "runc",
    "podman",
    "binutils",
    // The report page, opened in a real browser (tests/report.rs).
    "chromium",
];

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Setup { build_only } => setup_for(build_only),
        Task::Build => {
            setup()?;
            build_release()
        }
        Task::Demo => {
            setup()?;
            build_release()?;
            // The agents run from the image users deploy, under containerd.
            let archive = workspace_root().join("target/netflow-agent-demo-oci.tar");
            let built = image::build(
                &PathBuf::from(release_binary("netflow-agent")),
                &archive,
                &image::ImageMeta {
                    reference: "netflow-agent:0.1.0".into(),
                    version: "0.1.0".into(),
                    revision: git(&["rev-parse", "HEAD"]).unwrap_or_else(|_| "unknown".into()),
                    created: source_date_epoch().unwrap_or(0),
                },
            )?;
            // The lab on the shop example: a two-node cluster, recorded for real.
            cmd(
                release_binary("netflow-lab"),
                &[
                    "run",
                    "examples/shop.yaml",
                    "--out",
                    "lab-out",
                    "--agent-image",
                    &built.archive.display().to_string(),
                ],
            )
        }
        Task::Test => {
            setup()?;
            test()
        }
        Task::Image {
            out,
            rootfs,
            reference,
        } => {
            setup_for(true)?;
            cmd(
                "cargo",
                &[
                    "build",
                    "--profile",
                    DIST_PROFILE,
                    "--locked",
                    "--package",
                    "netflow-agent",
                    "--bin",
                    "netflow-agent",
                ],
            )?;
            let binary = PathBuf::from(release_binary("netflow-agent"));
            if let Some(dir) = rootfs {
                return image::write_rootfs(&binary, &dir);
            }
            let meta = image::ImageMeta {
                version: reference
                    .rsplit_once(':')
                    .map_or("latest", |(_, tag)| tag)
                    .to_string(),
                reference,
                revision: git(&["rev-parse", "HEAD"]).unwrap_or_else(|_| "unknown".into()),
                created: source_date_epoch()?,
            };
            let out = workspace_root().join(out);
            let built = image::build(&binary, &out, &meta)?;
            println!(
                "{}: {} ({} bytes; root filesystem {} bytes uncompressed), digest {}",
                built.archive.display(),
                meta.reference,
                built.archive_bytes,
                built.layer_bytes,
                built.digest
            );
            match image::time_to_ready(&binary) {
                Ok(ready) => println!("the agent is ready {ready:?} after it starts"),
                Err(err) => println!("start time to ready not measured: {err:#}"),
            }
            Ok(())
        }
        Task::Fuzz {
            runs,
            seconds,
            target,
        } => {
            setup_for(true)?;
            fuzz::run(
                &workspace_root(),
                &fuzz::Options {
                    runs,
                    seconds,
                    only: target,
                },
            )
        }
        Task::Soak { minutes } => {
            setup()?;
            build_release()?;
            cmd(
                release_binary("netflow-lab"),
                &["soak", "--minutes", &minutes.to_string()],
            )
        }
        Task::Bench { seconds, rounds } => {
            setup()?;
            build_release()?;
            cmd(
                release_binary("netflow-lab"),
                &[
                    "bench",
                    "--seconds",
                    &seconds.to_string(),
                    "--rounds",
                    &rounds.to_string(),
                ],
            )
        }
    }
}

fn setup() -> anyhow::Result<()> {
    setup_for(false)
}

fn setup_for(build_only: bool) -> anyhow::Result<()> {
    let test_packages = if build_only { &[][..] } else { TEST_PACKAGES };
    let missing: Vec<&str> = BUILD_PACKAGES
        .iter()
        .chain(test_packages)
        .copied()
        .filter(|p| !installed(p))
        .collect();
    apt_install(&missing)?;

    let llvm = llvm_major().context("reading the LLVM version of /usr/bin/rustc")?;
    let llvm_packages = [format!("llvm-{llvm}-dev"), format!("libpolly-{llvm}-dev")];
    let missing: Vec<&str> = llvm_packages
        .iter()
        .map(String::as_str)
        .filter(|p| !installed(p))
        .collect();
    apt_install(&missing)?;

    // The tests validate every Kubernetes object netflow writes against the
    // OpenAPI schema, with the kubernetes-validate package from PyPI.
    if !build_only && !python_module_present("kubernetes_validate") {
        eprintln!("xtask: installing kubernetes-validate (PyPI)");
        cmd(
            "python3",
            &["-m", "pip", "install", "--quiet", "kubernetes-validate"],
        )?;
    }
    // `policy verify` is checked against an independent engine, IBM's
    // network-config-analyzer (`nca`), on random policies.
    if !build_only && !python_module_present("nca") {
        eprintln!("xtask: installing network-config-analyzer (PyPI)");
        cmd(
            "python3",
            &["-m", "pip", "install", "--quiet", "network-config-analyzer"],
        )?;
    }

    if !bpf_linker_present() {
        eprintln!("xtask: installing bpf-linker for LLVM {llvm}");
        let llvm_bin = format!("/usr/lib/llvm-{llvm}/bin");
        let path = format!("{llvm_bin}:{}", std::env::var("PATH").unwrap_or_default());
        let status = Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{llvm}"))
            .env("PATH", path)
            .status()
            .context("running cargo install bpf-linker")?;
        if !status.success() {
            bail!("cargo install bpf-linker failed ({status})");
        }
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", packages.join(" "));
    cmd("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q"];
    args.extend_from_slice(packages);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get (are you root?)")?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", packages.join(" "));
    }
    Ok(())
}

/// The LLVM major version /usr/bin/rustc was built with: bpf-linker must match.
fn llvm_major() -> anyhow::Result<String> {
    let output = Command::new("/usr/bin/rustc").arg("-vV").output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .context("`/usr/bin/rustc -vV` printed no LLVM version")?;
    Ok(version
        .split('.')
        .next()
        .unwrap_or(version)
        .trim()
        .to_string())
}

fn python_module_present(module: &str) -> bool {
    Command::new("python3")
        .args(["-m", module, "--version"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

fn bpf_linker_present() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .context("running git")?;
    if !output.status.success() {
        bail!("git {} failed", args.join(" "));
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// Every time in the image: `SOURCE_DATE_EPOCH`, else the commit's time.
fn source_date_epoch() -> anyhow::Result<u64> {
    if let Ok(text) = std::env::var("SOURCE_DATE_EPOCH") {
        return text
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds"));
    }
    let text = git(&["log", "-1", "--format=%ct"])
        .context("no SOURCE_DATE_EPOCH and no git commit to take the image's time from")?;
    Ok(text.parse()?)
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The profile users' binaries are built with (Cargo.toml's `dist`: the
/// release profile, linked as one unit).
const DIST_PROFILE: &str = "dist";

fn release_binary(name: &str) -> String {
    workspace_root()
        .join("target")
        .join(DIST_PROFILE)
        .join(name)
        .display()
        .to_string()
}

/// Both binaries: `netflow-agent` (the DaemonSet's) and `netflow-lab` (the
/// lab, the benchmark and the test peer, which drive the agent).
fn build_release() -> anyhow::Result<()> {
    cmd(
        "cargo",
        &[
            "build",
            "--profile",
            DIST_PROFILE,
            "--package",
            "netflow-agent",
            "--features",
            "lab",
        ],
    )
}

fn test() -> anyhow::Result<()> {
    cmd("cargo", &["fmt", "--all", "--check"])?;
    check_layers()?;
    cmd(
        "cargo",
        &["clippy", "--all-targets", "--", "-D", "warnings"],
    )?;
    // The DaemonSet's build: the agent alone, without the lab feature the
    // test builds turn on (it must build, and lint clean, without it).
    cmd(
        "cargo",
        &[
            "clippy",
            "--package",
            "netflow-agent",
            "--bin",
            "netflow-agent",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The container test runs the image as users get it: built here by the
    // same code as `cargo xtask image`, from the test build's agent.
    cmd(
        "cargo",
        &[
            "build",
            "--package",
            "netflow-agent",
            "--features",
            "lab",
            "--bins",
        ],
    )?;
    let archive = workspace_root().join("target/netflow-agent-test-oci.tar");
    let built = image::build(
        &workspace_root().join("target/debug/netflow-agent"),
        &archive,
        &image::ImageMeta {
            reference: "netflow-agent:test".into(),
            version: "test".into(),
            revision: git(&["rev-parse", "HEAD"]).unwrap_or_else(|_| "unknown".into()),
            created: source_date_epoch().unwrap_or(0),
        },
    )?;
    eprintln!(
        "xtask: test image {} ({} bytes)",
        built.archive.display(),
        built.archive_bytes
    );
    // The root-only tests attach programs to cgroups and make namespaces of
    // their own; one at a time keeps their timing and cleanup simple.
    let (passed, failed) = run_tests(
        &["test", "--", "--test-threads=1"],
        &[("NETFLOW_AGENT_IMAGE", built.archive.as_os_str())],
    )?;
    // One closing line for the whole suite, whatever order cargo ran it in.
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    Ok(())
}

/// The agent's modules import only what the layering table allows.
fn check_layers() -> anyhow::Result<()> {
    let src = workspace_root().join("netflow-agent/src");
    if let Some(cycle) = layers::table_cycle() {
        bail!("the layering table has a cycle: {}", cycle.join(" -> "));
    }
    let violations =
        layers::check_tree(&src).with_context(|| format!("reading {}", src.display()))?;
    for violation in &violations {
        eprintln!("xtask: layering: {violation}");
    }
    if !violations.is_empty() {
        bail!(
            "{} imports break the layering (see docs/architecture.md)",
            violations.len()
        );
    }
    eprintln!("xtask: layering: every import follows the table");
    Ok(())
}

/// Runs `cargo ARGS`, echoing its output, and adds up its `test result:` lines.
fn run_tests(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new("cargo")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            if let Some((p, f)) = parse_test_result(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && failed == 0 {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok((passed, failed))
}

/// `test result: ok. 8 passed; 0 failed; ...` -> (8, 0).
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';').find_map(|part| {
            part.trim()
                .strip_suffix(word)?
                .trim()
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
    };
    Some((count(" passed")?, count(" failed")?))
}

fn cmd(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> anyhow::Result<()> {
    let program = program.as_ref();
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    if !status.success() {
        bail!(
            "`{} {}` failed ({status})",
            program.to_string_lossy(),
            args.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_lines_are_added_up() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 8 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.57s"
            ),
            Some((8, 0))
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 5 passed; 3 failed; 0 ignored"),
            Some((5, 3))
        );
        assert_eq!(parse_test_result("running 8 tests"), None);
    }
}
