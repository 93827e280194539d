//! The DNS messages the kernel passes up (queries a recorded socket sent to
//! port 53, responses it received from port 53): their id, question and the
//! names the answers give for addresses. The bytes come from the network
//! (any pod can send a packet from port 53), so every read is bounds-checked
//! and a malformed message gives `None`, never a panic. Parsed by hand: the
//! reader needs the header, the first question and A/AAAA/CNAME owners of a
//! message of at most 512 bytes, and a full decoder per packet would cost
//! more than the counting it sits beside.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the reader needs of one DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    /// A response (QR set), else a query.
    pub response: bool,
    /// The first question's name, lowercased.
    pub question: Option<String>,
    /// The addresses the answers give, each with the name asked for (and,
    /// behind a CNAME, the name that holds the record).
    pub answers: Vec<(String, IpAddr)>,
}

/// Parses a query or a response; `None` when it is malformed.
pub fn parse(message: &[u8]) -> Option<Message> {
    if message.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([message[0], message[1]]);
    let response = message[2] & 0x80 != 0;
    let questions = u16::from_be_bytes([message[4], message[5]]);
    let answers = u16::from_be_bytes([message[6], message[7]]);
    let mut at = 12;
    let mut asked = None;
    for _ in 0..questions {
        let (name, next) = read_name(message, at)?;
        asked.get_or_insert(name);
        at = next + 4;
    }
    let mut found = Vec::new();
    if response {
        for _ in 0..answers {
            let (owner, next) = read_name(message, at)?;
            let header = message.get(next..next + 10)?;
            let kind = u16::from_be_bytes([header[0], header[1]]);
            let length = u16::from_be_bytes([header[8], header[9]]) as usize;
            let data = message.get(next + 10..next + 10 + length)?;
            let address: Option<IpAddr> = match (kind, length) {
                (1, 4) => Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]).into()),
                (28, 16) => Some(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?).into()),
                _ => None,
            };
            if let Some(address) = address {
                if let Some(asked) = &asked {
                    found.push((asked.clone(), address));
                }
                if asked.as_ref() != Some(&owner) {
                    found.push((owner, address));
                }
            }
            at = next + 10 + length;
        }
    }
    Some(Message {
        id,
        response,
        question: asked,
        answers: found,
    })
}

/// The addresses a DNS response gives (see [`Message::answers`]); `None`
/// when the message is not a well-formed response.
pub fn response_addresses(message: &[u8]) -> Option<Vec<(String, IpAddr)>> {
    parse(message)
        .filter(|message| message.response)
        .map(|message| message.answers)
}

/// A (possibly compressed) name at `at`, and where the field after it starts.
fn read_name(message: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    // Pointers may chain; a bound keeps a malicious loop finite.
    for _ in 0..32 {
        let length = *message.get(at)?;
        if length == 0 {
            let name = labels.join(".").to_ascii_lowercase();
            return Some((name, end.unwrap_or(at + 1)));
        }
        if length & 0xc0 == 0xc0 {
            let pointer = (usize::from(length & 0x3f) << 8) | usize::from(*message.get(at + 1)?);
            end.get_or_insert(at + 2);
            at = pointer;
            continue;
        }
        let label = message.get(at + 1..at + 1 + usize::from(length))?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + usize::from(length);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed::dns_client::a_query;

    #[test]
    fn responses_give_names_for_addresses() {
        let query = a_query("API.payments.example", 7).unwrap();
        let mut response = query.clone();
        response[2] = 0x81;
        response[7] = 2; // a CNAME, then its A record
        // api.payments.example CNAME edge.example (pointer to the question for the owner)
        response.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 30, 0, 14]);
        response.extend_from_slice(&[
            4, b'e', b'd', b'g', b'e', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0,
        ]);
        let edge_name_at = response.len() - 14;
        response.extend_from_slice(&[
            0xc0,
            edge_name_at as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            30,
            0,
            4,
            203,
            0,
            113,
            10,
        ]);
        let found = response_addresses(&response).unwrap();
        let ip: std::net::IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(
            found,
            vec![
                ("api.payments.example".to_string(), ip),
                ("edge.example".to_string(), ip)
            ]
        );
        // A query is not a response; garbage and pointer loops are refused.
        assert!(response_addresses(&query).is_none());
        assert!(response_addresses(&[0xff; 40]).is_none_or(|found| found.is_empty()));
        let mut looping = response.clone();
        looping[12] = 0xc0;
        looping[13] = 12;
        assert!(response_addresses(&looping).is_none());
    }
}
