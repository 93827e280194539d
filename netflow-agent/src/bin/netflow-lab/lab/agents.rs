//! The lab's node agents: one `netflow-agent run` per node, as the
//! DaemonSet runs one per node, attached to that node's cgroup, with a
//! static inventory file (the lab has no API server) that the lab rewrites
//! when it replaces a pod. At the end each agent's `/graph` and `/metrics`
//! are read while it still records, the agents are stopped with SIGTERM, and
//! their graphs merged, as `graph pull` does for a cluster.
//!
//! With an image ([`Runner::Image`], `netflow-lab run --agent-image`), each
//! agent runs from the image users deploy, under a containerd of the lab's
//! own, with the DaemonSet's security context: only BPF, NET_ADMIN and
//! PERFMON, read-only root, containerd's default seccomp profile, the
//! node's cgroup tree mounted read-only. Host networking stands in for the
//! pod's port (the lab reads the agents' endpoints on loopback).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt as _;

use anyhow::{Context as _, bail};
use tracing::{info, warn};

use super::layout::{LAB_CGROUP, LabPlan};
use netflow_agent::{
    graph::CommGraph,
    policy::staged::Denials,
    testbed::{
        containerd::{AGENT_CAPABILITIES, AGENT_PATH, Containerd, capability_flags},
        http_client::{free_loopback_addr, http_get},
        prog_query,
    },
};

/// Where an image agent sees the node's cgroup v2 tree (the DaemonSet's
/// mount point).
const HOST_CGROUP: &str = "/host/sys/fs/cgroup";

/// How the node agents run.
#[derive(Clone)]
pub enum Runner {
    /// The netflow-agent binary, as a process.
    Process(PathBuf),
    /// The image in this OCI archive, under containerd.
    Image(PathBuf),
}

/// The image imported into the lab's containerd, whose files live in
/// `dir` (removed when the lab is done with them).
struct ImageRunner {
    containerd: Option<Containerd>,
    reference: String,
    dir: PathBuf,
}

impl Drop for ImageRunner {
    fn drop(&mut self) {
        drop(self.containerd.take());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// How many times an agent starts on fresh ports when its own were taken.
const LISTEN_ATTEMPTS: usize = 3;

/// What the agent logs when it cannot bind a port (`daemon::http::ServeError`)
/// because another socket holds it.
const PORT_TAKEN: &str = "Address already in use";

/// How one start of an agent ended.
#[derive(PartialEq, Eq)]
enum Start {
    Ready,
    /// It exited because a port it was given was taken.
    PortTaken,
}

/// The part of the log at `path` from byte `start` on (empty if unreadable).
fn log_since(path: &Path, start: u64) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let start = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// How often the lab's agents read the kernel table.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// One node's agent.
struct NodeAgent {
    node: String,
    cgroup: PathBuf,
    /// `OUT/agents/NODE`: state directory, flow logs, log, metrics.
    dir: PathBuf,
    /// Health and metrics.
    listen: SocketAddr,
    /// The graph (loopback only, as in the pod).
    graph_listen: SocketAddr,
    child: Option<Child>,
    /// Runs so far (each writes its own flow log).
    runs: usize,
}

/// What a set of node agents runs with.
pub struct AgentSetup<'a> {
    pub runner: Runner,
    /// The lab's output directory.
    pub out: &'a Path,
    /// Below `out`: one directory per node's agent.
    pub agents_dir: &'a str,
    pub inventory: &'a Path,
    /// Policies the agents judge live traffic against (`run --staged`).
    pub staged: Option<&'a Path>,
}

pub struct Agents {
    /// The binary, or the image (`None`: the binary).
    binary: PathBuf,
    image: Option<ImageRunner>,
    inventory: PathBuf,
    /// `--staged` (absolute; below the output directory, which image
    /// agents see at the same path).
    staged: Option<PathBuf>,
    /// The lab's output directory (absolute): mounted into image agents.
    out: PathBuf,
    /// The cgroup v2 mount the node cgroups are in.
    mount: PathBuf,
    agents: Vec<NodeAgent>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        // An error path: the programs go with the processes.
        for agent in &mut self.agents {
            if let Some(mut child) = agent.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Agents {
    /// Starts one agent per node, each with its state under
    /// `OUT/AGENTS_DIR/NODE`, and waits until each is ready.
    pub fn start(setup: AgentSetup, plan: &LabPlan, mount: &Path) -> anyhow::Result<Self> {
        let AgentSetup {
            runner,
            out,
            agents_dir,
            inventory,
            staged,
        } = setup;
        let out = fs::canonicalize(out).with_context(|| format!("resolving {}", out.display()))?;
        let staged = staged
            .map(|dir| {
                fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))
            })
            .transpose()?;
        let (binary, image) = match runner {
            Runner::Process(binary) => (binary, None),
            Runner::Image(archive) => {
                let dir = out.join("containerd");
                let _ = fs::remove_dir_all(&dir);
                let containerd = Containerd::start(&dir)?;
                let reference = containerd.import(&archive)?;
                info!(image = %reference, "node agents run from the image under containerd");
                (
                    PathBuf::from(AGENT_PATH),
                    Some(ImageRunner {
                        containerd: Some(containerd),
                        reference,
                        dir,
                    }),
                )
            }
        };
        let mut agents = Self {
            binary,
            image,
            inventory: fs::canonicalize(inventory)
                .with_context(|| format!("resolving {}", inventory.display()))?,
            staged,
            out: out.clone(),
            mount: mount.to_path_buf(),
            agents: Vec::new(),
        };
        for node in &plan.nodes {
            let dir = out.join(agents_dir).join(&node.name);
            // A fresh run: no state from an earlier lab run in this place.
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let cgroup = mount.join(LAB_CGROUP).join(&node.name);
            fs::create_dir_all(&cgroup)
                .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
            agents.agents.push(NodeAgent {
                node: node.name.clone(),
                cgroup,
                dir,
                listen: free_loopback_addr().context("finding a free port")?,
                graph_listen: free_loopback_addr().context("finding a free port")?,
                child: None,
                runs: 0,
            });
        }
        for index in 0..agents.agents.len() {
            agents.spawn(index)?;
        }
        info!(
            agents = agents.agents.len(),
            "netflow attached to the lab: one agent per node"
        );
        Ok(agents)
    }

    /// Starts the agent of node `index` for its next run and waits until it
    /// is ready. A port picked free can be taken by another socket before the
    /// agent binds it; then the agent exits saying so, and it starts again
    /// on other ports.
    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        self.agents[index].runs += 1;
        for attempt in 1..=LISTEN_ATTEMPTS {
            if self.spawn_once(index, attempt)? == Start::Ready {
                return Ok(());
            }
            let agent = &mut self.agents[index];
            warn!(
                node = %agent.node,
                listen = %agent.listen,
                graph_listen = %agent.graph_listen,
                "a port of the agent was taken before it bound it; starting it on others"
            );
            agent.listen = free_loopback_addr().context("finding a free port")?;
            agent.graph_listen = free_loopback_addr().context("finding a free port")?;
        }
        let agent = &self.agents[index];
        bail!(
            "the agent of {} found its ports taken {LISTEN_ATTEMPTS} times; see {}",
            agent.node,
            agent.dir.join("agent.log").display()
        )
    }

    fn spawn_once(&mut self, index: usize, attempt: usize) -> anyhow::Result<Start> {
        let agent = &mut self.agents[index];
        let log_path = agent.dir.join("agent.log");
        // Where this attempt's lines begin, to tell a port taken from the
        // agent's other failures.
        let log_start = fs::metadata(&log_path).map(|meta| meta.len()).unwrap_or(0);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(agent.dir.join("agent.log"))
            .context("opening the agent log")?;
        let mut command = match &self.image {
            None => Command::new(&self.binary),
            Some(image) => {
                let containerd = image.containerd.as_ref().context("containerd is gone")?;
                let mut command = containerd.ctr();
                command
                    .args(["run", "--rm", "--net-host", "--seccomp", "--read-only"])
                    .args(capability_flags(&AGENT_CAPABILITIES))
                    .arg(format!(
                        "--mount=type=bind,src={},dst={HOST_CGROUP},options=rbind:ro",
                        self.mount.display()
                    ))
                    .arg(format!(
                        "--mount=type=bind,src={out},dst={out},options=rbind:rw",
                        out = self.out.display()
                    ))
                    .arg(&image.reference)
                    .arg(format!("nfl-{}-{}-{attempt}", agent.node, agent.runs))
                    .arg(&self.binary);
                command
            }
        };
        // If the lab dies (a crash, SIGKILL), its agents stop too (ctr
        // passes the signal on to its task).
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Inside the container the node's cgroup tree is where the DaemonSet
        // mounts it.
        let cgroup = match &self.image {
            None => agent.cgroup.clone(),
            Some(_) => Path::new(HOST_CGROUP).join(
                agent
                    .cgroup
                    .strip_prefix(&self.mount)
                    .context("a node cgroup outside the cgroup v2 mount")?,
            ),
        };
        let child = command
            .arg("run")
            .arg("--cgroup")
            .arg(&cgroup)
            .arg("--state-dir")
            .arg(agent.dir.join("state"))
            .arg("--inventory")
            .arg(&self.inventory)
            .args(
                self.staged
                    .iter()
                    .flat_map(|dir| [std::ffi::OsStr::new("--staged"), dir.as_os_str()]),
            )
            .arg("--listen")
            .arg(agent.listen.to_string())
            .arg("--graph-listen")
            .arg(agent.graph_listen.to_string())
            .arg("--interval")
            .arg(INTERVAL.as_secs_f64().to_string())
            .arg("--output")
            .arg(agent.dir.join(format!("flows-{}.jsonl", agent.runs)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the agent of {}", agent.node))?;
        agent.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(agent.listen, "/readyz") {
                info!(node = %agent.node, listen = %agent.listen, "node agent ready");
                return Ok(Start::Ready);
            }
            if let Some(child) = agent.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                agent.child = None;
                if log_since(&log_path, log_start).contains(PORT_TAKEN) {
                    return Ok(Start::PortTaken);
                }
                bail!(
                    "the agent of {} exited ({status}) before it was ready; see {}",
                    agent.node,
                    agent.dir.join("agent.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent of {} was not ready within 30 s; see {}",
                    agent.node,
                    agent.dir.join("agent.log").display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every agent has read the table at least once since now
    /// (two intervals and the last packets' way).
    pub fn settle(&self) {
        thread::sleep(INTERVAL * 2 + Duration::from_millis(300));
    }

    /// Stops every agent with SIGTERM; each must exit cleanly.
    fn terminate(&mut self) -> anyhow::Result<()> {
        for agent in &mut self.agents {
            let Some(mut child) = agent.child.take() else {
                continue;
            };
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().context("waiting for an agent")?;
            if !status.success() {
                bail!(
                    "the agent of {} exited with {status} on SIGTERM; see {}",
                    agent.node,
                    agent.dir.join("agent.log").display()
                );
            }
            // SIGTERM must leave nothing in the kernel (asked of the kernel).
            for attach_type in prog_query::CGROUP_ATTACH_TYPES {
                let left = prog_query::attached_programs(&agent.cgroup, attach_type)
                    .with_context(|| format!("querying {}", agent.cgroup.display()))?;
                if left != 0 {
                    bail!(
                        "the agent of {} left {left} program(s) attached to {} after SIGTERM",
                        agent.node,
                        agent.cgroup.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// An upgrade: every agent stopped and started again on its state.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.settle();
        self.terminate()?;
        for index in 0..self.agents.len() {
            self.spawn(index)?;
        }
        info!("node agents restarted");
        Ok(())
    }

    /// Reads `/metrics` and `/graph` (and with staged policies,
    /// `/denials`) of each agent while it records, into
    /// `OUT/AGENTS_DIR/NODE/metrics.txt`, `graph-live.json` and `denials.json`.
    pub fn scrape(&self) -> anyhow::Result<()> {
        for agent in &self.agents {
            let denials =
                self.staged
                    .is_some()
                    .then_some((agent.graph_listen, "/denials", "denials.json"));
            for (addr, path, file) in [
                (agent.listen, "/metrics", "metrics.txt"),
                (agent.graph_listen, "/graph", "graph-live.json"),
            ]
            .into_iter()
            .chain(denials)
            {
                let (status, body) = http_get(addr, path)
                    .with_context(|| format!("GET {path} of the agent of {}", agent.node))?;
                if status != 200 {
                    bail!("GET {path} of the agent of {}: HTTP {status}", agent.node);
                }
                fs::write(agent.dir.join(file), body)?;
            }
        }
        Ok(())
    }

    /// Stops the agents and merges their graphs (each agent saved its last
    /// interval on SIGTERM); the flow logs of every run are concatenated
    /// into `flows`.
    pub fn finish(mut self, graph: &Path, flows: &Path) -> anyhow::Result<CommGraph> {
        self.settle();
        self.scrape()?;
        self.terminate()?;
        let mut merged = CommGraph::new();
        let mut log = Vec::new();
        for agent in &self.agents {
            merged.merge(&CommGraph::load(&agent.dir.join("state/graph.json"))?);
            for run in 1..=agent.runs {
                let path = agent.dir.join(format!("flows-{run}.jsonl"));
                log.extend(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
            }
        }
        merged.save(graph)?;
        netflow_agent::graph::file::write_atomically(flows, &log)
            .with_context(|| format!("cannot write {}", flows.display()))?;
        if self.staged.is_some() {
            // Every node's denials, merged as `graph pull --denials` does.
            let mut denials = Denials::new();
            for agent in &self.agents {
                let path = agent.dir.join("denials.json");
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                denials.merge(&Denials::parse(&text, &path.display().to_string())?);
            }
            let path = self.out.join("staged-denials.json");
            netflow_agent::graph::file::write_atomically(
                &path,
                &serde_json::to_vec_pretty(&denials)?,
            )
            .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(merged)
    }
}
