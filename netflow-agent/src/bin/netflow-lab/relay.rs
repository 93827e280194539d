//! `netflow-lab peer relay`: TCP proxies that stand in for the proxies users
//! run in pods: an ingress controller (accept on a port, connect on to a
//! Service) and a service mesh's sidecar (take what iptables REDIRECT sent
//! to the proxy's port, find where it was going with `SO_ORIGINAL_DST`,
//! and connect there itself). Bytes are copied both ways until each side
//! closes.

use std::{
    io,
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    str::FromStr,
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow};

/// Where one listener's connections go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Always this address (an ingress controller's backend Service).
    Fixed(SocketAddr),
    /// Where the client was connecting before a REDIRECT (a sidecar's
    /// outbound side).
    Original,
    /// This address on the port the client was connecting to (a sidecar's
    /// inbound side hands the connection to its app over loopback).
    OriginalPortOn(Ipv4Addr),
}

/// `LISTEN=TARGET`: `0.0.0.0:80=10.96.0.20:80`, `0.0.0.0:15001=original`,
/// `0.0.0.0:15006=original-port@127.0.0.1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub target: Target,
}

impl FromStr for Forward {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (listen, target) = text
            .split_once('=')
            .ok_or_else(|| anyhow!("{text:?} is not LISTEN=TARGET"))?;
        let listen = listen
            .parse()
            .with_context(|| format!("{listen:?} is not an address to listen on"))?;
        let target = match target {
            "original" => Target::Original,
            _ => match target.strip_prefix("original-port@") {
                Some(ip) => Target::OriginalPortOn(
                    ip.parse()
                        .with_context(|| format!("{ip:?} is not an IPv4 address"))?,
                ),
                None => Target::Fixed(target.parse().with_context(|| {
                    format!("{target:?} is not ADDR:PORT, original or original-port@IP")
                })?),
            },
        };
        Ok(Self { listen, target })
    }
}

/// Serves every forward until killed; prints `ready` once all listen.
/// `mark`: the relay's own connections carry this socket mark, so the
/// REDIRECT rules can let them through (Istio uses its proxy's user id).
/// `hold`: connections opened at start and held open (a proxy's stream to
/// its control plane).
pub fn run(forwards: &[Forward], hold: &[SocketAddr], mark: Option<u32>) -> anyhow::Result<()> {
    let mut workers = Vec::new();
    for &address in hold {
        workers.push(thread::spawn(move || {
            match connect_marked(address, mark) {
                // Held until the other side closes or the relay is killed.
                Ok(mut stream) => {
                    let _ = io::copy(&mut stream, &mut io::sink());
                }
                Err(err) => tracing::debug!(error = %err, %address, "hold"),
            }
        }));
    }
    for forward in forwards {
        let listener = TcpListener::bind(forward.listen)
            .with_context(|| format!("cannot listen on {}", forward.listen))?;
        let target = forward.target.clone();
        workers.push(thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let target = target.clone();
                thread::spawn(move || {
                    if let Err(err) = relay(client, &target, mark) {
                        tracing::debug!(error = %err, "relay");
                    }
                });
            }
        }));
    }
    println!("ready");
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

fn relay(client: TcpStream, target: &Target, mark: Option<u32>) -> io::Result<()> {
    let destination = match target {
        Target::Fixed(address) => *address,
        Target::Original => SocketAddr::V4(original_destination(&client)?),
        Target::OriginalPortOn(ip) => SocketAddr::V4(SocketAddrV4::new(
            *ip,
            original_destination(&client)?.port(),
        )),
    };
    let upstream = connect_marked(destination, mark)?;
    let (mut client_reader, mut upstream_writer) = (client.try_clone()?, upstream.try_clone()?);
    let upload = thread::spawn(move || {
        let _ = io::copy(&mut client_reader, &mut upstream_writer);
        let _ = upstream_writer.shutdown(Shutdown::Write);
    });
    let (mut upstream_reader, mut client_writer) = (upstream, client);
    let _ = io::copy(&mut upstream_reader, &mut client_writer);
    let _ = client_writer.shutdown(Shutdown::Write);
    let _ = upload.join();
    Ok(())
}

fn connect_marked(destination: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(destination),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    socket.connect_timeout(&destination.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// The destination a connection had before netfilter redirected it
/// (`SO_ORIGINAL_DST`, from the connection's conntrack entry).
fn original_destination(stream: &TcpStream) -> io::Result<SocketAddrV4> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    // SAFETY: sockaddr_in is plain data; getsockopt writes at most `length` bytes.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            (&raw mut address).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)),
        u16::from_be(address.sin_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_read_each_target_form() {
        assert_eq!(
            "0.0.0.0:80=10.96.0.20:80".parse::<Forward>().unwrap(),
            Forward {
                listen: "0.0.0.0:80".parse().unwrap(),
                target: Target::Fixed("10.96.0.20:80".parse().unwrap()),
            }
        );
        assert_eq!(
            "0.0.0.0:15001=original".parse::<Forward>().unwrap().target,
            Target::Original
        );
        assert_eq!(
            "0.0.0.0:15006=original-port@127.0.0.1"
                .parse::<Forward>()
                .unwrap()
                .target,
            Target::OriginalPortOn(Ipv4Addr::LOCALHOST)
        );
        assert!("0.0.0.0:80".parse::<Forward>().is_err());
        assert!("0.0.0.0:80=somewhere".parse::<Forward>().is_err());
    }
}
