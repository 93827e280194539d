//! `netflow-lab peer`: the small programs that stand in for pods in tests,
//! the lab and the benchmark. A peer first moves itself into a cgroup and a
//! network namespace (while it is still single-threaded), then serves or
//! connects with plain std sockets, so its traffic comes from a real process
//! in a real cgroup, exactly as a pod's would.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot join cgroup {path}")]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {path}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("{what} {addr}")]
    Socket {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("echo from {addr} returned {received} of {sent} bytes")]
    ShortEcho {
        addr: SocketAddr,
        sent: usize,
        received: usize,
    },
}

/// Moves this process into `cgroup` and then into the network namespace at
/// `netns`. Must run before any thread is started.
pub fn enter(cgroup: Option<&Path>, netns: Option<&Path>) -> Result<(), PeerError> {
    if let Some(cgroup) = cgroup {
        // "0" means the writing process itself.
        fs::write(cgroup.join("cgroup.procs"), "0").map_err(|source| PeerError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
    }
    if let Some(netns) = netns {
        let netns_error = |source| PeerError::Netns {
            path: netns.to_path_buf(),
            source,
        };
        let file = File::open(netns).map_err(netns_error)?;
        // SAFETY: setns on an fd we own; the process is single-threaded here.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(netns_error(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Serves TCP echo on `tcp`, UDP echo on `udp` and a TCP sink (reads and
/// discards) on `sink`, until killed. Prints `ready` once every socket is bound.
pub fn serve(tcp: &[SocketAddr], udp: &[SocketAddr], sink: &[SocketAddr]) -> Result<(), PeerError> {
    let mut workers = Vec::new();
    for &addr in tcp.iter().chain(sink) {
        let listener = TcpListener::bind(addr).map_err(|source| PeerError::Socket {
            what: "cannot listen on tcp",
            addr,
            source,
        })?;
        let echo = tcp.contains(&addr);
        workers.push(thread::spawn(move || accept_loop(listener, echo)));
    }
    for &addr in udp {
        let socket = UdpSocket::bind(addr).map_err(|source| PeerError::Socket {
            what: "cannot bind udp",
            addr,
            source,
        })?;
        workers.push(thread::spawn(move || udp_echo(socket)));
    }
    println!("ready");
    let _ = io::stdout().flush();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

fn accept_loop(listener: TcpListener, echo: bool) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = serve_stream(stream, echo);
        });
    }
}

fn serve_stream(mut stream: TcpStream, echo: bool) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut first = true;
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        // A client speaking HTTP gets HTTP answers (the lab's HTTP steps);
        // bytes that only begin like a request are echoed like any others.
        if echo && first && crate::http_peer::begins_request(&buffer[..read]) {
            let mut received = buffer[..read].to_vec();
            if crate::http_peer::complete_request_line(&mut stream, &mut received)? {
                return crate::http_peer::respond(stream, received);
            }
            stream.write_all(&received)?;
            first = false;
            continue;
        }
        first = false;
        if echo {
            stream.write_all(&buffer[..read])?;
        }
    }
}

fn udp_echo(socket: UdpSocket) {
    let mut buffer = vec![0u8; 65536];
    while let Ok((read, from)) = socket.recv_from(&mut buffer) {
        let _ = socket.send_to(&buffer[..read], from);
    }
}

/// What one client connection did, printed as a JSON line.
#[derive(Debug, Serialize)]
pub struct ConnectionReport {
    pub protocol: &'static str,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub sent: usize,
    pub received: usize,
    /// Datagrams (UDP) or writes (TCP) sent.
    pub messages: usize,
}

/// What each TCP client connection does.
#[derive(Clone, Debug)]
pub struct TcpExchange {
    /// Payload bytes per message.
    pub bytes: usize,
    /// What each message carries (a letter pattern when `None`).
    pub payload: Option<Vec<u8>>,
    /// Messages sent one after the other, each echoed back before the next.
    pub messages: usize,
    /// Pause between two messages.
    pub spacing: Duration,
    /// How long the connection stays open after the last echo.
    pub hold: Duration,
}

/// Opens `count` TCP connections to `addr`; on each, sends the exchange's
/// messages and reads each echo back, keeps the connection open for its
/// hold time, then half-closes and waits for the server to close.
pub fn connect_tcp(
    addr: SocketAddr,
    exchange: TcpExchange,
    count: usize,
) -> Result<Vec<ConnectionReport>, PeerError> {
    let socket_error = |what, source| PeerError::Socket { what, addr, source };
    let payload = exchange
        .payload
        .clone()
        .unwrap_or_else(|| pattern(exchange.bytes));
    let mut reports = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|err| socket_error("cannot connect to tcp", err))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|err| socket_error("cannot set timeout on", err))?;
        let local = stream
            .local_addr()
            .map_err(|err| socket_error("no local address for", err))?;
        let mut echoed = vec![0; payload.len()];
        let mut received = 0;
        for message in 0..exchange.messages {
            if message > 0 {
                thread::sleep(exchange.spacing);
            }
            stream
                .write_all(&payload)
                .map_err(|err| socket_error("cannot send to", err))?;
            stream
                .read_exact(&mut echoed)
                .map_err(|err| socket_error("cannot read echo from", err))?;
            received += echoed.len();
        }
        thread::sleep(exchange.hold);
        stream
            .shutdown(Shutdown::Write)
            .map_err(|err| socket_error("cannot half-close", err))?;
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .map_err(|err| socket_error("cannot read echo from", err))?;
        received += rest.len();
        let sent = payload.len() * exchange.messages;
        if received != sent {
            return Err(PeerError::ShortEcho {
                addr,
                sent,
                received,
            });
        }
        reports.push(ConnectionReport {
            protocol: "tcp",
            local,
            remote: addr,
            sent,
            received,
            messages: exchange.messages,
        });
    }
    Ok(reports)
}

/// Opens `count` UDP sockets to `addr`; each sends `datagrams` datagrams of
/// `bytes` and waits for each echo.
pub fn connect_udp(
    addr: SocketAddr,
    bytes: usize,
    datagrams: usize,
    count: usize,
) -> Result<Vec<ConnectionReport>, PeerError> {
    let socket_error = |what, source| PeerError::Socket { what, addr, source };
    let payload = pattern(bytes);
    let any = unspecified_like(&addr);
    let mut reports = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = UdpSocket::bind(any).map_err(|err| socket_error("cannot bind for", err))?;
        socket
            .connect(addr)
            .map_err(|err| socket_error("cannot connect udp to", err))?;
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|err| socket_error("cannot set timeout on", err))?;
        let local = socket
            .local_addr()
            .map_err(|err| socket_error("no local address for", err))?;
        let mut received = 0;
        let mut buffer = vec![0u8; bytes.max(1)];
        for _ in 0..datagrams {
            socket
                .send(&payload)
                .map_err(|err| socket_error("cannot send to", err))?;
            received += socket
                .recv(&mut buffer)
                .map_err(|err| socket_error("no echo from", err))?;
        }
        reports.push(ConnectionReport {
            protocol: "udp",
            local,
            remote: addr,
            sent: bytes * datagrams,
            received,
            messages: datagrams,
        });
    }
    Ok(reports)
}

/// What one try of [`probe`] came to.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ProbeReport {
    pub protocol: String,
    pub remote: SocketAddr,
    /// TCP: the handshake completed. UDP: an answer came back.
    pub connected: bool,
    /// Why it did not (refused, unreachable, timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Tries each destination once, as an attacker's scan does: a TCP
/// handshake (then closed), or a UDP datagram and its answer, each given
/// `timeout`. A try that fails is a result, not an error. `route` gives
/// the address a socket asking for a destination connects to (socket-level
/// load balancing); reports name the destination asked for.
pub fn probe(
    tcp: &[SocketAddr],
    udp: &[SocketAddr],
    timeout: Duration,
    route: &dyn Fn(SocketAddr, bool) -> SocketAddr,
) -> Vec<ProbeReport> {
    let tried_tcp = tcp.iter().map(|addr| {
        let outcome = TcpStream::connect_timeout(&route(*addr, false), timeout).map(|stream| {
            let _ = stream.shutdown(Shutdown::Both);
        });
        report("tcp", *addr, outcome)
    });
    let tried_udp = udp.iter().map(|addr| {
        let outcome = (|| {
            let socket = UdpSocket::bind(unspecified_like(addr))?;
            socket.connect(route(*addr, true))?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send(&pattern(64))?;
            let mut answer = [0u8; 512];
            socket.recv(&mut answer).map(|_| ())
        })();
        report("udp", *addr, outcome)
    });
    tried_tcp.chain(tried_udp).collect()
}

fn report(protocol: &str, remote: SocketAddr, outcome: io::Result<()>) -> ProbeReport {
    ProbeReport {
        protocol: protocol.into(),
        remote,
        connected: outcome.is_ok(),
        error: outcome.err().map(|err| err.to_string()),
    }
}

/// Any local address and port of `addr`'s family, to bind a client to.
fn unspecified_like(addr: &SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = if addr.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    SocketAddr::new(ip, 0)
}

fn pattern(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| b'a' + (i % 26) as u8).collect()
}

/// What a benchmark client measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub mode: &'static str,
    pub operations: u64,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BenchMode {
    /// Request/response on one connection (64-byte ping-pong).
    Rr,
    /// A new TCP connection per request/response.
    Crr,
    /// One-way stream into a sink.
    Stream,
}

fn connect_nodelay(addr: SocketAddr) -> Result<TcpStream, PeerError> {
    let socket_error = |what, source| PeerError::Socket { what, addr, source };
    let stream = TcpStream::connect(addr).map_err(|e| socket_error("cannot connect to", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| socket_error("cannot set nodelay on", e))?;
    Ok(stream)
}

/// One 64-byte request and its 64-byte echo.
fn ping_pong(stream: &mut TcpStream, addr: SocketAddr) -> Result<(), PeerError> {
    let socket_error = |what, source| PeerError::Socket { what, addr, source };
    let request = [7u8; 64];
    let mut response = [0u8; 64];
    stream
        .write_all(&request)
        .map_err(|e| socket_error("cannot send to", e))?;
    stream
        .read_exact(&mut response)
        .map_err(|e| socket_error("cannot read from", e))
}

pub fn bench(
    mode: BenchMode,
    addr: SocketAddr,
    duration: Duration,
) -> Result<BenchReport, PeerError> {
    let socket_error = |what, source| PeerError::Socket { what, addr, source };
    let start = Instant::now();
    let mut operations = 0u64;
    let mut bytes = 0u64;
    match mode {
        BenchMode::Rr => {
            let mut stream = connect_nodelay(addr)?;
            while start.elapsed() < duration {
                ping_pong(&mut stream, addr)?;
                operations += 1;
                bytes += 128;
            }
        }
        BenchMode::Crr => {
            while start.elapsed() < duration {
                ping_pong(&mut connect_nodelay(addr)?, addr)?;
                operations += 1;
                bytes += 128;
            }
        }
        BenchMode::Stream => {
            let mut stream =
                TcpStream::connect(addr).map_err(|e| socket_error("cannot connect to", e))?;
            let chunk = vec![7u8; 128 * 1024];
            while start.elapsed() < duration {
                stream
                    .write_all(&chunk)
                    .map_err(|e| socket_error("cannot send to", e))?;
                operations += 1;
                bytes += chunk.len() as u64;
            }
        }
    }
    Ok(BenchReport {
        mode: match mode {
            BenchMode::Rr => "rr",
            BenchMode::Crr => "crr",
            BenchMode::Stream => "stream",
        },
        operations,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Sends, from UDP port 53, a DNS response saying `name` is `ip` to `to`,
/// which never asked for it.
pub fn forge_dns(to: SocketAddr, name: &str, ip: std::net::Ipv4Addr) -> Result<(), PeerError> {
    let socket_error = |what, source| PeerError::Socket {
        what,
        addr: to,
        source,
    };
    let mut answer = netflow_agent::testbed::dns_client::a_query(name, 0x4242)
        .map_err(|err| socket_error("cannot build a DNS answer for", io::Error::other(err)))?;
    answer[2] = 0x81; // a response
    answer[7] = 1; // one answer: NAME A IP
    answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
    answer.extend_from_slice(&ip.octets());
    let socket = UdpSocket::bind("0.0.0.0:53")
        .map_err(|err| socket_error("cannot bind port 53 to reach", err))?;
    socket
        .send_to(&answer, to)
        .map_err(|err| socket_error("cannot send a forged answer to", err))?;
    Ok(())
}
