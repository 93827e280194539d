//! The data that flows between the stages, as plain types: a flow record
//! (what the kernel stage reads), an endpoint (what the identity stage names),
//! a protocol, and times as files store them. Nothing here imports another
//! part of the crate.

mod endpoint;
mod flow;
mod labels;
mod protocol;
mod time;

pub use endpoint::{Endpoint, EndpointKind};
pub use flow::{
    Address, Basis, DnsAnswer, DnsName, FlowLogFormat, FlowRecord, Handshake, HttpRequest,
    IntervalStats, Side,
};
pub use labels::{LabelMap, deserialize_labels, labels_from_kubernetes, labels_to_kubernetes};
pub use protocol::{PROTO_SCTP, Protocol};
pub use time::{NotATime, Timestamp, file_time, file_time_display, rfc3339, utc_day};
