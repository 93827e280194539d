//! IP protocols as flow records and graph files write them.

use serde::{Deserialize, Serialize};

/// An IP protocol: `tcp`, `udp`, `sctp`, or its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(pub u8);

/// IANA's number for SCTP, the third protocol Kubernetes policies name.
pub const PROTO_SCTP: u8 = 132;

impl Protocol {
    /// The name the Kubernetes and Cilium APIs use (`TCP`, `UDP`, `SCTP`);
    /// `None` for a protocol no policy API can name (ICMP, ...).
    pub fn policy_name(self) -> Option<&'static str> {
        match self.0 {
            netflow_common::PROTO_TCP => Some("TCP"),
            netflow_common::PROTO_UDP => Some("UDP"),
            PROTO_SCTP => Some("SCTP"),
            _ => None,
        }
    }

    /// The protocol the Kubernetes and Cilium APIs name `name` (`TCP`,
    /// `UDP`, `SCTP`, as they spell them).
    pub fn from_policy_name(name: &str) -> Option<Protocol> {
        [
            netflow_common::PROTO_TCP,
            netflow_common::PROTO_UDP,
            PROTO_SCTP,
        ]
        .map(Protocol)
        .into_iter()
        .find(|protocol| protocol.policy_name() == Some(name))
    }

    fn short_name(self) -> Option<&'static str> {
        match self.0 {
            netflow_common::PROTO_TCP => Some("tcp"),
            netflow_common::PROTO_UDP => Some("udp"),
            PROTO_SCTP => Some("sctp"),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.short_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.short_name() {
            Some(name) => serializer.serialize_str(name),
            None => serializer.serialize_u8(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    /// A visitor rather than an untagged enum: every flow record holds a
    /// protocol, and an untagged enum buffers the value before trying each
    /// form.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ProtocolVisitor)
    }
}

struct ProtocolVisitor;

impl serde::de::Visitor<'_> for ProtocolVisitor {
    type Value = Protocol;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tcp, udp, sctp or a protocol number")
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Protocol, E> {
        u8::try_from(number)
            .map(Protocol)
            .map_err(|_| E::custom(format!("protocol number {number} is above 255")))
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Protocol, E> {
        u64::try_from(number)
            .map_err(|_| E::custom(format!("protocol number {number} is negative")))
            .and_then(|number| self.visit_u64(number))
    }

    /// The names `short_name` writes, in any case.
    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Protocol, E> {
        [
            netflow_common::PROTO_TCP,
            netflow_common::PROTO_UDP,
            PROTO_SCTP,
        ]
        .map(Protocol)
        .into_iter()
        .find(|protocol| {
            protocol
                .short_name()
                .is_some_and(|short| short.eq_ignore_ascii_case(name))
        })
        .ok_or_else(|| {
            E::custom(format!(
                "unknown protocol {name:?} (expected tcp, udp, sctp or a number)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_read_back_as_written() {
        for protocol in [Protocol(6), Protocol(17), Protocol(1), Protocol(132)] {
            let json = serde_json::to_string(&protocol).unwrap();
            assert_eq!(serde_json::from_str::<Protocol>(&json).unwrap(), protocol);
        }
        assert_eq!(serde_json::to_string(&Protocol(6)).unwrap(), "\"tcp\"");
        assert_eq!(serde_json::to_string(&Protocol(1)).unwrap(), "1");
        assert_eq!(serde_json::to_string(&Protocol(132)).unwrap(), "\"sctp\"");
        assert_eq!(
            serde_json::from_str::<Protocol>("132").unwrap(),
            Protocol(132)
        );
        assert_eq!(
            serde_json::from_str::<Protocol>("\"Udp\"").unwrap(),
            Protocol(17)
        );
    }

    #[test]
    fn other_values_are_no_protocol() {
        for bad in ["256", "-1", "\"icmp\"", "1.5", "true", "null", "[6]"] {
            let err = serde_json::from_str::<Protocol>(bad).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        let err = serde_json::from_str::<Protocol>("\"gre\"").unwrap_err();
        assert!(
            err.to_string().contains("unknown protocol \"gre\""),
            "{err}"
        );
    }

    #[test]
    fn policies_name_tcp_udp_and_sctp_only() {
        assert_eq!(Protocol(132).policy_name(), Some("SCTP"));
        assert_eq!(Protocol(17).policy_name(), Some("UDP"));
        assert_eq!(Protocol(1).policy_name(), None);
    }
}
