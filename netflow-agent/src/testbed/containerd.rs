//! A containerd of our own, for running the agent's image as a node's
//! runtime would (the container test, `netflow-lab run --agent-image`): its
//! root, state and socket in a directory of the caller's, the CRI plugin off
//! (no CNI here), runc through containerd's shim. Stopped on drop; the
//! directory is the caller's to remove.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The containerd namespace everything runs in.
pub const NAMESPACE: &str = "netflow-lab";

/// Where the image puts the agent (its ENTRYPOINT).
pub const AGENT_PATH: &str = "/usr/local/bin/netflow-agent";

/// The capabilities the DaemonSet keeps (`drop: [ALL]`, these added).
pub const AGENT_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

/// Every Linux capability (capabilities(7)): ctr adds, then drops, so
/// "drop all but these" is a drop of each of the others.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `ctr run` flags that keep exactly `keep` (names without `CAP_`) of
/// every capability.
pub fn capability_flags(keep: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = CAPABILITIES
        .iter()
        .filter(|cap| !keep.contains(cap))
        .map(|cap| format!("--cap-drop=CAP_{cap}"))
        .collect();
    flags.extend(keep.iter().map(|cap| format!("--cap-add=CAP_{cap}")));
    flags
}

pub struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    /// Starts containerd with everything under `dir` and waits until it answers.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{socket}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
            ),
        )?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting containerd (is it installed? cargo xtask setup installs it)")?;
        let containerd = Self { child, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answered = containerd
                .ctr()
                .arg("version")
                .output()
                .is_ok_and(|out| out.status.success());
            if answered {
                return Ok(containerd);
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 20 s; see {}",
                    dir.join("containerd.log").display()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ctr` talking to this containerd, in [`NAMESPACE`].
    pub fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE]);
        command
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Imports an OCI archive; the image's reference.
    pub fn import(&self, archive: &Path) -> anyhow::Result<String> {
        let output = self
            .ctr()
            .args(["images", "import", "--all-platforms"])
            .arg(archive)
            .output()
            .context("running ctr images import")?;
        if !output.status.success() {
            bail!(
                "ctr could not import {}: {}",
                archive.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let listed = self.ctr().args(["images", "list", "-q"]).output()?;
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .find(|line| line.contains("netflow-agent"))
            .map(str::to_string)
            .with_context(|| format!("{} holds no netflow-agent image", archive.display()))
    }

    /// The host pid of a running task, once it runs.
    pub fn task_pid(&self, id: &str, within: Duration) -> anyhow::Result<u32> {
        let deadline = Instant::now() + within;
        loop {
            let tasks = self.ctr().args(["tasks", "list"]).output()?;
            let pid = String::from_utf8_lossy(&tasks.stdout)
                .lines()
                .find(|line| line.split_whitespace().next() == Some(id))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|pid| pid.parse().ok());
            if let Some(pid) = pid {
                return Ok(pid);
            }
            if Instant::now() > deadline {
                bail!("task {id} did not start");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: signalling the containerd this value started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
