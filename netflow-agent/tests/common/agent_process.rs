//! A `netflow-agent` process started by a test: its stderr read line by line
//! as it comes, waited for until it says it attached, killed if the test
//! ends without stopping it.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

pub struct AgentProcess {
    pub child: Child,
    /// Stderr lines not read yet.
    pub lines: mpsc::Receiver<String>,
    /// What it said up to "attached".
    pub said: Vec<String>,
    /// When it said it.
    pub attached: Instant,
}

impl AgentProcess {
    /// `netflow-agent SUBCOMMAND --cgroup CGROUP ARGS`, waited for until
    /// it attached (30 s at most).
    pub fn start<I, S>(subcommand: &str, cgroup: &Path, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(super::agent())
            .arg(subcommand)
            .arg("--cgroup")
            .arg(cgroup)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut agent = Self {
            child,
            lines,
            said: Vec::new(),
            attached: Instant::now(),
        };
        loop {
            let Ok(line) = agent.lines.recv_timeout(Duration::from_secs(30)) else {
                panic!("the agent did not attach: {:#?}", agent.said);
            };
            let attached = line.contains("attached: recording");
            agent.said.push(line);
            if attached {
                agent.attached = Instant::now();
                return agent;
            }
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`, waits, and asserts a clean exit; everything it said.
    pub fn stop(mut self, signal: i32) -> Vec<String> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        let mut said = std::mem::take(&mut self.said);
        said.extend(self.lines.try_iter());
        assert!(status.success(), "exit {status}: {said:#?}");
        said
    }

    /// SIGKILL and wait: everything it said.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut said = std::mem::take(&mut self.said);
        said.extend(self.lines.try_iter());
        said
    }
}

impl Drop for AgentProcess {
    /// A test that fails midway leaves no agent behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
