//! Builds `netflow-ebpf` for `bpfel-unknown-none` and hands the object to the
//! agent (which embeds it with `include_bytes_aligned!`).
//!
//! The machine's rustup toolchains have no BPF `core`, so the build uses
//! Debian's `/usr/bin/cargo` and `/usr/bin/rustc` with the prebuilt BPF core
//! (see `docs/toolchain.md`); `cargo xtask setup` installs them.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const BPF_TARGET: &str = "bpfel-unknown-none";
const SYSTEM_CARGO: &str = "/usr/bin/cargo";
const SYSTEM_RUSTC: &str = "/usr/bin/rustc";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("netflow-agent has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    for watched in [
        "netflow-ebpf/src",
        "netflow-ebpf/Cargo.toml",
        "netflow-common/src",
        "netflow-common/Cargo.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=NETFLOW_BPF_TARGET_DIR");

    for tool in [SYSTEM_CARGO, SYSTEM_RUSTC] {
        if !Path::new(tool).exists() {
            bail!(
                "{tool} is missing: the eBPF toolchain is not installed. Run `cargo xtask setup` first."
            );
        }
    }
    if !on_path("bpf-linker") {
        bail!("bpf-linker is not on PATH: run `cargo xtask setup` first.");
    }

    // One shared directory for every host profile, so debug, release and
    // clippy builds do not each rebuild the eBPF crate from scratch.
    let bpf_target_dir = env::var_os("NETFLOW_BPF_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target").join("bpf"));

    let mut cargo = Command::new(SYSTEM_CARGO);
    cargo
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--package",
            "netflow-ebpf",
            "--target",
            BPF_TARGET,
        ])
        .arg("--target-dir")
        .arg(&bpf_target_dir);
    // Whatever the host build was given (wrappers, flags, target) must not leak
    // into the BPF build.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
    ] {
        cargo.env_remove(var);
    }
    cargo
        .env("RUSTC", SYSTEM_RUSTC)
        // aya-ebpf needs #![feature(asm_experimental_arch)] on BPF.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS", "fallback")
        // BTF kept; cpu v3 for 32-bit atomics (kernel >= 5.1).
        .env(
            "RUSTFLAGS",
            "-C debuginfo=2 -C link-arg=--btf -C target-cpu=v3",
        );
    let status = cargo
        .status()
        .with_context(|| format!("running {SYSTEM_CARGO} for the eBPF crate"))?;
    if !status.success() {
        bail!("building netflow-ebpf for {BPF_TARGET} failed ({status})");
    }

    let object = bpf_target_dir
        .join(BPF_TARGET)
        .join("release")
        .join("netflow-ebpf");
    let embedded = out_dir.join("netflow-ebpf.o");
    std::fs::copy(&object, &embedded)
        .with_context(|| format!("copying {} to {}", object.display(), embedded.display()))?;
    Ok(())
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
