//! Socket-level load balancing, as a kube-proxy replacement does it
//! (Cilium's): a connect() or sendto() to a Service's ClusterIP goes to one
//! of its backend pods before any packet exists, so no ClusterIP is ever on
//! the wire and no DNAT rule runs. The lab's clients do the same in
//! userspace with the table the lab writes (`socket-lb.json`): what the
//! kernel's hooks see (a socket connected to the backend pod's address and
//! port) is the same as under the real thing.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
    net::SocketAddr,
    path::Path,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One Service port and where it goes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceEntry {
    pub service: SocketAddr,
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub backends: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
pub struct SocketLb {
    by_service: HashMap<(SocketAddr, bool), Vec<SocketAddr>>,
}

impl SocketLb {
    pub fn new(entries: Vec<ServiceEntry>) -> Self {
        let by_service = entries
            .into_iter()
            .map(|entry| {
                let udp = entry.protocol.eq_ignore_ascii_case("UDP");
                ((entry.service, udp), entry.backends)
            })
            .collect();
        Self { by_service }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).with_context(|| {
            format!(
                "cannot read the socket load-balancing table {}",
                path.display()
            )
        })?;
        let entries: Vec<ServiceEntry> = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a socket load-balancing table", path.display()))?;
        Ok(Self::new(entries))
    }

    /// Where a socket asking for `addr` is connected: one of the Service's
    /// backends, chosen at random each time, else `addr` itself (not a
    /// Service, or a port it has no backend on: the connect goes nowhere,
    /// as it would).
    pub fn translate(&self, addr: SocketAddr, udp: bool) -> SocketAddr {
        match self.by_service.get(&(addr, udp)) {
            Some(backends) if !backends.is_empty() => {
                let pick = RandomState::new().hash_one(addr) as usize % backends.len();
                backends[pick]
            }
            _ => addr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_address_goes_to_a_backend_and_nothing_else_moves() {
        let lb = SocketLb::new(vec![ServiceEntry {
            service: "10.96.0.20:80".parse().unwrap(),
            protocol: "TCP".into(),
            backends: vec![
                "10.244.0.11:8080".parse().unwrap(),
                "10.244.1.10:8080".parse().unwrap(),
            ],
        }]);
        let service: SocketAddr = "10.96.0.20:80".parse().unwrap();
        let picked: std::collections::BTreeSet<SocketAddr> =
            (0..64).map(|_| lb.translate(service, false)).collect();
        assert_eq!(picked.len(), 2, "both backends get connections: {picked:?}");
        // UDP to the same address, another port, another address: unchanged.
        assert_eq!(lb.translate(service, true), service);
        let other: SocketAddr = "10.96.0.20:81".parse().unwrap();
        assert_eq!(lb.translate(other, false), other);
    }
}
