//! Two "pods" on one machine, made of the same kernel parts as on a node:
//! each is a network namespace (joined to the other by a veth pair) with its
//! own cgroup below a common parent. Used by the tests, the lab and the
//! benchmark (compiled only with the `lab` feature: never in the agent).
//!
//! Safety: the namespaces have no route to this machine's interfaces, so
//! nothing sent inside them can leave. Everything a testbed makes is removed
//! when it is dropped; a testbed made under the same name removes the leftovers
//! of an earlier run that crashed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::kernel::cgroup_mount;

pub mod containerd;
pub mod dns_client;
pub mod http_client;
pub mod packets;
pub mod prog_query;
pub mod scenario;

/// The hosts of a testbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    A,
    B,
}

impl Host {
    fn suffix(self) -> &'static str {
        match self {
            Host::A => "a",
            Host::B => "b",
        }
    }
    pub fn ipv4(self) -> &'static str {
        match self {
            Host::A => "10.231.0.1",
            Host::B => "10.231.0.2",
        }
    }
    pub fn ipv6(self) -> &'static str {
        match self {
            Host::A => "fd00:6e66::1",
            Host::B => "fd00:6e66::2",
        }
    }
}

pub struct Testbed {
    name: String,
    cgroup_parent: PathBuf,
    children: Vec<Child>,
}

impl Testbed {
    /// Makes namespaces `NAME-a` and `NAME-b` joined by a veth pair (IPv4
    /// 10.231.0.0/24 and IPv6 fd00:6e66::/64) and cgroups `NAME/{a,b}` under
    /// the cgroup v2 mount. `name` must be at most 12 characters.
    pub fn two_hosts(name: &str) -> anyhow::Result<Self> {
        if name.len() > 12 || name.is_empty() {
            bail!("testbed name {name:?} must be 1 to 12 characters (interface names are short)");
        }
        let mount = cgroup_mount::cgroup2_mount()?;
        let testbed = Self {
            name: name.to_string(),
            cgroup_parent: mount.join(name),
            children: Vec::new(),
        };
        testbed.remove_leftovers();
        testbed
            .build()
            .with_context(|| format!("building testbed {name}"))?;
        Ok(testbed)
    }

    fn build(&self) -> anyhow::Result<()> {
        for host in [Host::A, Host::B] {
            ip(&["netns", "add", &self.netns_name(host)])?;
            fs::create_dir_all(self.cgroup(host))
                .with_context(|| format!("creating cgroup {}", self.cgroup(host).display()))?;
        }
        let (ns_a, ns_b) = (self.netns_name(Host::A), self.netns_name(Host::B));
        let (if_a, if_b) = (self.link_name(Host::A), self.link_name(Host::B));
        ip(&[
            "link", "add", &if_a, "netns", &ns_a, "type", "veth", "peer", "name", &if_b, "netns",
            &ns_b,
        ])?;
        for (host, ns, interface) in [(Host::A, &ns_a, &if_a), (Host::B, &ns_b, &if_b)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", host.ipv4()),
                "dev",
                interface,
            ])?;
            // nodad: the address is usable at once instead of after duplicate detection.
            ip(&[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{}/64", host.ipv6()),
                "dev",
                interface,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", interface, "up"])?;
        }
        Ok(())
    }

    pub fn netns_name(&self, host: Host) -> String {
        format!("{}-{}", self.name, host.suffix())
    }

    /// The host's end of the veth pair between the two namespaces.
    pub fn link_name(&self, host: Host) -> String {
        format!("{}{}", self.name, host.suffix())
    }

    pub fn netns_path(&self, host: Host) -> PathBuf {
        PathBuf::from("/run/netns").join(self.netns_name(host))
    }

    /// The parent of both hosts' cgroups: attach here to see both.
    pub fn cgroup_parent(&self) -> &Path {
        &self.cgroup_parent
    }

    pub fn cgroup(&self, host: Host) -> PathBuf {
        self.cgroup_parent.join(host.suffix())
    }

    pub fn cgroup_id(&self, host: Host) -> anyhow::Result<u64> {
        Ok(cgroup_mount::cgroup_id(&self.cgroup(host))?)
    }

    /// A `netflow-lab peer` command placed in `host`'s cgroup and namespace.
    pub fn peer_command(&self, lab: &Path, host: Host, args: &[&str]) -> Command {
        let mut command = Command::new(lab);
        command
            .arg("peer")
            .arg("--cgroup")
            .arg(self.cgroup(host))
            .arg("--netns")
            .arg(self.netns_path(host))
            .args(args);
        command
    }

    /// Starts echo servers in `host` and waits until they listen. The server
    /// is killed when the testbed is dropped.
    pub fn start_server(&mut self, lab: &Path, host: Host, args: &[&str]) -> anyhow::Result<()> {
        let mut serve_args = vec!["serve"];
        serve_args.extend_from_slice(args);
        let mut child = self
            .peer_command(lab, host, &serve_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the peer server")?;
        let stdout = child.stdout.take().context("server stdout")?;
        self.children.push(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .context("waiting for the peer server")?;
        if line.trim() != "ready" {
            bail!("peer server did not start (said {line:?})");
        }
        Ok(())
    }

    /// Runs a peer to completion in `host`; fails with its stderr if it fails.
    pub fn run_peer(&self, lab: &Path, host: Host, args: &[&str]) -> anyhow::Result<Output> {
        let output = self
            .peer_command(lab, host, args)
            .output()
            .context("running a peer")?;
        if !output.status.success() {
            bail!(
                "peer {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output)
    }

    /// Runs `command` inside `host`'s network namespace (e.g. a sysctl).
    pub fn exec_in(&self, host: Host, command: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["netns", "exec"];
        let ns = self.netns_name(host);
        args.push(&ns);
        args.extend_from_slice(command);
        ip(&args)
    }

    fn remove_leftovers(&self) {
        for host in [Host::A, Host::B] {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.netns_name(host)])
                .stderr(Stdio::null())
                .status();
        }
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.remove_leftovers();
    }
}

/// Kills every process in the cgroups under `path` and removes them.
pub fn remove_cgroup_tree(path: &Path) {
    if !path.exists() {
        return;
    }
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    // cgroup.kill (Linux 5.14) kills the whole subtree at once.
    let _ = fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir(path).is_err() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2): run `cargo xtask setup`")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
