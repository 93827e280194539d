//! `cargo xtask image`: the agent's OCI image archive, built from the release
//! binary without a registry or a base image.
//!
//! The one layer holds exactly what the agent needs to start: the binary,
//! the shared libraries `ldd` names for it (the C library and its loader),
//! and the empty directories the DaemonSet mounts over. No shell, no package
//! manager. Everything is owned by root and not writable by others.
//!
//! Reproducible: entries are sorted, every time in the archive is the
//! commit's time (`SOURCE_DATE_EPOCH` when set), owners are 0, and gzip
//! carries no name or time, so two builds of one commit on one distribution
//! give the same digest.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// Where the binary lives in the image.
pub const BINARY_PATH: &str = "usr/local/bin/netflow-agent";
/// Directories the DaemonSet mounts over (they must exist on a read-only root).
const MOUNT_POINTS: [&str; 2] = ["host/sys/fs/cgroup", "var/lib/netflow"];

/// What the image is called and says about itself.
pub struct ImageMeta {
    /// `netflow-agent:0.1.0`.
    pub reference: String,
    pub version: String,
    pub revision: String,
    /// Unix seconds: every time in the image.
    pub created: u64,
}

pub struct Built {
    pub archive: PathBuf,
    /// The manifest's digest: what a registry or containerd names the image by.
    pub digest: String,
    pub archive_bytes: u64,
    pub layer_bytes: u64,
}

/// One file of the root filesystem: its path in the image, where its
/// bytes come from (`None`: a directory), its mode.
struct Entry {
    path: String,
    source: Option<PathBuf>,
    mode: u32,
}

/// The image's root filesystem: the binary, the libraries it loads, the
/// mount points, and every parent directory.
fn rootfs(binary: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut files: BTreeMap<String, (Option<PathBuf>, u32)> = BTreeMap::new();
    files.insert(BINARY_PATH.into(), (Some(binary.to_path_buf()), 0o755));
    for library in shared_libraries(binary)? {
        let inside = library
            .to_str()
            .context("a library path that is not UTF-8")?
            .trim_start_matches('/')
            .to_string();
        // The loader's name is what the binary asks for; its bytes are the
        // file the symlink chain ends at.
        let real = std::fs::canonicalize(&library)
            .with_context(|| format!("resolving {}", library.display()))?;
        files.insert(inside, (Some(real), 0o755));
    }
    for mount in MOUNT_POINTS {
        files.insert(mount.into(), (None, 0o755));
    }
    let parents: Vec<String> = files
        .keys()
        .flat_map(|path| {
            let mut parents = Vec::new();
            let mut current = Path::new(path).parent();
            while let Some(parent) = current.filter(|p| !p.as_os_str().is_empty()) {
                parents.push(parent.to_string_lossy().into_owned());
                current = parent.parent();
            }
            parents
        })
        .collect();
    for parent in parents {
        files.entry(parent).or_insert((None, 0o755));
    }
    Ok(files
        .into_iter()
        .map(|(path, (source, mode))| Entry { path, source, mode })
        .collect())
}

/// The absolute paths `ldd` lists for `binary` (loader included).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        bail!("ldd {} failed: {}", binary.display(), text);
    }
    let mut libraries: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
            let path = match line.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    libraries.sort();
    libraries.dedup();
    Ok(libraries)
}

/// A tar of `entries`, the same bytes for the same files and time.
fn layer(entries: &[Entry], mtime: u64) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(entry.mode);
        match &entry.source {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{}/", entry.path), std::io::empty())?;
            }
            Some(source) => {
                let bytes = std::fs::read(source)
                    .with_context(|| format!("reading {}", source.display()))?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, &entry.path, bytes.as_slice())?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn rfc3339(unix_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds),
    )
    .to_string()
}

/// Writes the image's root filesystem into `dir` (for the Containerfile,
/// whose last stage copies it onto `scratch`: the same files as the archive).
pub fn write_rootfs(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    let binary = stripped(binary, &dir.join("netflow-agent"))?;
    let entries = rootfs(&binary);
    for entry in entries? {
        let path = dir.join(&entry.path);
        match &entry.source {
            None => std::fs::create_dir_all(&path)?,
            Some(source) => {
                std::fs::copy(source, &path).with_context(|| {
                    format!("copying {} to {}", source.display(), path.display())
                })?;
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))?;
    }
    std::fs::remove_file(&binary)?;
    Ok(())
}

/// `binary` without its debug information (deterministic), beside `out`.
fn stripped(binary: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let copy = out.with_extension("agent");
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&copy)
        .status()
        .context("running objcopy (binutils)")?;
    if !status.success() {
        bail!(
            "objcopy --strip-debug {} failed ({status})",
            binary.display()
        );
    }
    Ok(copy)
}

/// Builds the archive at `out` from `binary` (its debug information left out).
pub fn build(binary: &Path, out: &Path, meta: &ImageMeta) -> anyhow::Result<Built> {
    let binary = stripped(binary, out)?;
    let built = build_stripped(&binary, out, meta);
    let _ = std::fs::remove_file(&binary);
    built
}

fn build_stripped(binary: &Path, out: &Path, meta: &ImageMeta) -> anyhow::Result<Built> {
    let entries = rootfs(binary)?;
    let tar = layer(&entries, meta.created)?;
    let diff_id = sha256(&tar);
    let mut gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gzip.write_all(&tar)?;
    let compressed = gzip.finish()?;
    let layer_digest = sha256(&compressed);

    let created = rfc3339(meta.created);
    let labels = json!({
        "org.opencontainers.image.title": "netflow-agent",
        "org.opencontainers.image.version": meta.version,
        "org.opencontainers.image.revision": meta.revision,
        "org.opencontainers.image.source": "netflow (this repository)",
        "org.opencontainers.image.created": created,
    });
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": "0",
            "Entrypoint": [format!("/{BINARY_PATH}")],
            "Cmd": ["run", "--state-dir=/var/lib/netflow"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "cargo xtask image"}],
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = sha256(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": compressed.len(),
        }],
        "annotations": labels,
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let digest = sha256(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "org.opencontainers.image.ref.name": meta.reference,
                "io.containerd.image.name": format!("docker.io/library/{}", meta.reference),
            },
        }],
    });
    let index = serde_json::to_vec(&index)?;

    let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let files: Vec<(String, &[u8])> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
        ),
        ("index.json".into(), &index),
        (blob(&config_digest), &config),
        (blob(&layer_digest), &compressed),
        (blob(&digest), &manifest),
    ];
    let mut archive = tar::Builder::new(Vec::new());
    archive.mode(tar::HeaderMode::Deterministic);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_mtime(meta.created);
        header.set_size(0);
        archive.append_data(&mut header, dir, std::io::empty())?;
    }
    for (path, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_mtime(meta.created);
        header.set_size(bytes.len() as u64);
        archive.append_data(&mut header, path, bytes)?;
    }
    let archive = archive.into_inner()?;
    // Written whole and renamed: never half an archive under the name.
    let partial = out.with_extension("tar.partial");
    std::fs::write(&partial, &archive).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(Built {
        archive: out.to_path_buf(),
        digest,
        archive_bytes: archive.len() as u64,
        layer_bytes: tar.len() as u64,
    })
}

/// How long the agent takes from start to answering `/readyz` 200: run as
/// the DaemonSet runs it (attached at the cgroup v2 root, a state
/// directory), with an empty static inventory. Needs root.
pub fn time_to_ready(binary: &Path) -> anyhow::Result<std::time::Duration> {
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};
    let state = std::env::temp_dir().join(format!("xtask-ready-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    std::fs::write(
        state.join("inventory.json"),
        r#"{"apiVersion":"v1","kind":"List","items":[]}"#,
    )?;
    // A free port of the loopback, for the health endpoints.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let mut agent = Command::new(binary)
        .arg("run")
        .arg("--state-dir")
        .arg(&state)
        .arg("--inventory")
        .arg(state.join("inventory.json"))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let ready = loop {
        if let Some(status) = agent.try_wait()? {
            let mut said = String::new();
            if let Some(mut stderr) = agent.stderr.take() {
                stderr.read_to_string(&mut said)?;
            }
            let _ = std::fs::remove_dir_all(&state);
            bail!("the agent exited ({status}): {}", said.trim());
        }
        let answered = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut stream| {
            stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response.starts_with("HTTP/1.1 200"))
        });
        if answered.unwrap_or(false) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = agent.kill();
            bail!("not ready after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: signalling the child started above.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&state);
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small dynamic executable of the machine stands in for the agent.
    fn any_binary() -> PathBuf {
        PathBuf::from("/bin/true")
    }

    #[test]
    fn two_builds_give_one_digest_and_the_layout_is_oci() {
        let dir = std::env::temp_dir().join(format!("xtask-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = ImageMeta {
            reference: "netflow-agent:test".into(),
            version: "test".into(),
            revision: "0".repeat(40),
            created: 1_764_000_000,
        };
        let first = build(&any_binary(), &dir.join("a.tar"), &meta).unwrap();
        let second = build(&any_binary(), &dir.join("b.tar"), &meta).unwrap();
        assert_eq!(first.digest, second.digest);
        assert_eq!(
            std::fs::read(&first.archive).unwrap(),
            std::fs::read(&second.archive).unwrap()
        );
        let listing = Command::new("tar")
            .arg("-tf")
            .arg(&first.archive)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        for path in ["oci-layout", "index.json", "blobs/sha256/"] {
            assert!(listing.lines().any(|line| line == path), "{listing}");
        }
        // The layer: the binary, its loader, the mount points; no shell.
        let entries = rootfs(&any_binary()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&BINARY_PATH), "{paths:?}");
        assert!(paths.iter().any(|p| p.contains("ld-linux")), "{paths:?}");
        assert!(paths.contains(&"var/lib/netflow") && paths.contains(&"host/sys/fs/cgroup"));
        assert!(!paths.iter().any(|p| p.ends_with("/sh")), "{paths:?}");
        // The Containerfile's root filesystem holds the same paths.
        let tree = dir.join("rootfs");
        write_rootfs(&any_binary(), &tree).unwrap();
        let listing = Command::new("find")
            .arg(".")
            .current_dir(&tree)
            .output()
            .unwrap();
        let mut written: Vec<String> = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .filter(|line| *line != ".")
            .map(|line| line.trim_start_matches("./").to_string())
            .collect();
        written.sort();
        let mut expected: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        expected.sort();
        assert_eq!(written, expected);
        // Another time is another image.
        let later = build(
            &any_binary(),
            &dir.join("c.tar"),
            &ImageMeta {
                created: meta.created + 1,
                ..meta
            },
        )
        .unwrap();
        assert_ne!(later.digest, first.digest);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
