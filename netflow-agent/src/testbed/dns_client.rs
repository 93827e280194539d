//! Just enough DNS for the lab's clients and the tests: an A (or AAAA)
//! query over UDP and the addresses in its answer (RFC 1035 wire format).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS query for {name} to {server}")]
    Io {
        name: String,
        server: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{name:?} is not a valid DNS name")]
    BadName { name: String },
    #[error("DNS answer for {name} from {server} is malformed")]
    Malformed { name: String, server: SocketAddr },
    #[error("{server} has no address for {name} (rcode {rcode})")]
    NoAnswer {
        name: String,
        server: SocketAddr,
        rcode: u8,
    },
}

/// Record types the client asks for.
pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

/// A query for the A records of `name`, with message id `id`.
pub fn a_query(name: &str, id: u16) -> Result<Vec<u8>, DnsError> {
    query(name, id, TYPE_A)
}

/// A query for `name`'s records of type `kind`, with message id `id`.
pub fn query(name: &str, id: u16, kind: u16) -> Result<Vec<u8>, DnsError> {
    let bad = || DnsError::BadName {
        name: name.to_string(),
    };
    let mut message = Vec::with_capacity(32 + name.len());
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&[0x01, 0x00]); // recursion desired
    message.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad());
        }
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&kind.to_be_bytes());
    message.extend_from_slice(&[0, 1]); // class IN
    Ok(message)
}

/// The A addresses in a response to query `id`; `Err(rcode)` when none.
pub fn a_answers(response: &[u8], id: u16) -> Option<Result<Vec<Ipv4Addr>, u8>> {
    let found = answers(response, id)?;
    Some(found.and_then(|all| {
        let v4: Vec<Ipv4Addr> = all
            .into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        if v4.is_empty() { Err(0) } else { Ok(v4) }
    }))
}

/// The A and AAAA addresses in a response to query `id`; `Err(rcode)`
/// when none.
pub fn answers(response: &[u8], id: u16) -> Option<Result<Vec<IpAddr>, u8>> {
    if response.len() < 12 || u16::from_be_bytes([response[0], response[1]]) != id {
        return None;
    }
    let rcode = response[3] & 0x0f;
    let questions = u16::from_be_bytes([response[4], response[5]]);
    let answers = u16::from_be_bytes([response[6], response[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(response, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(response, at)?;
        let header = response.get(at..at + 10)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let length = u16::from_be_bytes([header[8], header[9]]) as usize;
        let data = response.get(at + 10..at + 10 + length)?;
        if kind == TYPE_A && length == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]).into());
        } else if kind == TYPE_AAAA && length == 16 {
            let octets: [u8; 16] = data.try_into().ok()?;
            addresses.push(Ipv6Addr::from(octets).into());
        }
        at += 10 + length;
    }
    Some(if addresses.is_empty() {
        Err(rcode)
    } else {
        Ok(addresses)
    })
}

fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *message.get(at)?;
        match length {
            0 => return Some(at + 1),
            // A compression pointer ends the name.
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l as usize,
        }
    }
}

/// Resolves `name` through the DNS server at `server`.
pub fn resolve(name: &str, server: SocketAddr) -> Result<Ipv4Addr, DnsError> {
    match resolve_kind(name, server, TYPE_A)? {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => Err(DnsError::Malformed {
            name: name.into(),
            server,
        }),
    }
}

/// Resolves `name`'s IPv6 address (AAAA) through the DNS server at `server`.
pub fn resolve_v6(name: &str, server: SocketAddr) -> Result<Ipv6Addr, DnsError> {
    match resolve_kind(name, server, TYPE_AAAA)? {
        IpAddr::V6(ip) => Ok(ip),
        IpAddr::V4(_) => Err(DnsError::Malformed {
            name: name.into(),
            server,
        }),
    }
}

fn resolve_kind(name: &str, server: SocketAddr, kind: u16) -> Result<IpAddr, DnsError> {
    let io_error = |source| DnsError::Io {
        name: name.to_string(),
        server,
        source,
    };
    let id = (std::process::id() & 0xffff) as u16;
    let query = query(name, id, kind)?;
    let any: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).map_err(io_error)?;
    socket.connect(server).map_err(io_error)?;
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(io_error)?;
    socket.send(&query).map_err(io_error)?;
    let mut buffer = [0u8; 1500];
    let length = socket.recv(&mut buffer).map_err(io_error)?;
    let wanted = |ip: &IpAddr| ip.is_ipv4() == (kind == TYPE_A);
    match answers(&buffer[..length], id)
        .map(|found| found.map(|all| all.into_iter().filter(wanted).collect::<Vec<_>>()))
    {
        None => Err(DnsError::Malformed {
            name: name.into(),
            server,
        }),
        Some(Err(rcode)) => Err(DnsError::NoAnswer {
            name: name.into(),
            server,
            rcode,
        }),
        Some(Ok(addresses)) => addresses.first().copied().ok_or(DnsError::NoAnswer {
            name: name.into(),
            server,
            rcode: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_read_back() {
        let query = a_query("cart.shop.svc.cluster.local", 0x1234).unwrap();
        // The response repeats the question and answers with a pointer to it.
        let mut response = query.clone();
        response[2] = 0x81;
        response[3] = 0x80;
        response[7] = 1; // one answer
        response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 96, 0, 20]);
        assert_eq!(
            a_answers(&response, 0x1234),
            Some(Ok(vec![Ipv4Addr::new(10, 96, 0, 20)]))
        );
        assert_eq!(a_answers(&response, 0x9999), None);
        let mut nxdomain = query;
        nxdomain[3] = 0x83;
        assert_eq!(a_answers(&nxdomain, 0x1234), Some(Err(3)));
        assert!(a_answers(&response[..20], 0x1234).is_none());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(a_query("a..b", 1).is_err());
        assert!(a_query(&"x".repeat(64), 1).is_err());
    }
}
