//! IP protocols as flow records and graph files write them.

use serde::{Deserialize, Serialize};

/// An IP protocol: `tcp`, `udp`, or its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(pub u8);

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            netflow_common::PROTO_TCP => f.write_str("tcp"),
            netflow_common::PROTO_UDP => f.write_str("udp"),
            other => write!(f, "{other}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            netflow_common::PROTO_TCP => serializer.serialize_str("tcp"),
            netflow_common::PROTO_UDP => serializer.serialize_str("udp"),
            other => serializer.serialize_u8(other),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(u8),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(number) => Ok(Protocol(number)),
            Raw::Name(name) => match name.to_ascii_lowercase().as_str() {
                "tcp" => Ok(Protocol(netflow_common::PROTO_TCP)),
                "udp" => Ok(Protocol(netflow_common::PROTO_UDP)),
                other => Err(serde::de::Error::custom(format!(
                    "unknown protocol {other:?} (expected tcp, udp or a number)"
                ))),
            },
        }
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
    }
}
