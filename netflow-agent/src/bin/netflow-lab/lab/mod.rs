//! The lab: a simulated cluster on one machine, made of the kernel parts a
//! node uses (network namespaces, veth, bridges, DNAT rules, kubelet-style
//! cgroups), recorded through the real eBPF path.

pub mod agents;
pub mod attack;
pub mod kube_proxy;
pub mod layout;
pub mod run;
pub mod variants;
pub use netflow_agent::testbed::scenario;
