//! Crafted packets for BPF_PROG_TEST_RUN (the parser tests, the
//! benchmark's per-run costs): IPv4 and IPv6 headers, TCP and UDP, and the
//! Ethernet frame the test runner takes.

pub const SRC4: [u8; 4] = [10, 1, 0, 1];
pub const DST4: [u8; 4] = [10, 1, 0, 2];
pub const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The Ethernet frame the kernel's test runner takes around `ip_packet`; it
/// strips it, as on a real path, so the program sees data from the IP header
/// on. The runner refuses an IPv4/IPv6 ethertype in front of less than a
/// whole IP header, so shorter packets go in under an experimental
/// ethertype: the programs parse the version nibble, never the ethertype.
pub fn frame(ip_packet: &[u8]) -> Vec<u8> {
    let ethertype: [u8; 2] = match (ip_packet.first().map(|b| b >> 4), ip_packet.len()) {
        (Some(4), 20..) => [0x08, 0x00],
        (Some(6), 40..) => [0x86, 0xdd],
        _ => [0x88, 0xb5],
    };
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&ethertype);
    frame.extend_from_slice(ip_packet);
    frame
}

/// Offsets in `struct __sk_buff`, the context BPF_PROG_TEST_RUN takes.
const SKB_IFINDEX_OFFSET: usize = 40;
const SKB_GSO_SEGS_OFFSET: usize = 164;

/// The context for a test run of a cgroup/skb program: the packet as if it
/// passed a real device of this namespace (without one the runner gives it
/// the loopback device, and the programs leave loopback traffic alone),
/// carrying `gso_segs` segments (0: not a GSO packet). Nothing is sent: the
/// device only names where the packet would have been.
pub fn test_run_context(gso_segs: u32) -> std::io::Result<Vec<u8>> {
    let mut context = vec![0u8; SKB_GSO_SEGS_OFFSET + 4];
    context[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4]
        .copy_from_slice(&non_loopback_ifindex()?.to_ne_bytes());
    context[SKB_GSO_SEGS_OFFSET..].copy_from_slice(&gso_segs.to_ne_bytes());
    Ok(context)
}

/// The lowest interface index of this namespace's devices but loopback (1).
fn non_loopback_ifindex() -> std::io::Result<u32> {
    let mut lowest: Option<u32> = None;
    for entry in std::fs::read_dir("/sys/class/net")?.flatten() {
        let index = std::fs::read_to_string(entry.path().join("ifindex"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        if let Some(index) = index.filter(|index| *index > 1) {
            lowest = Some(lowest.map_or(index, |lowest| lowest.min(index)));
        }
    }
    lowest.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no network device but loopback in this namespace (/sys/class/net)",
        )
    })
}

/// An IPv4 packet from [`SRC4`] to [`DST4`] around `l4`.
pub fn ipv4(protocol: u8, fragment: u16, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 1]); // id
    packet.extend_from_slice(&fragment.to_be_bytes());
    packet.extend_from_slice(&[64, protocol, 0, 0]);
    packet.extend_from_slice(&SRC4);
    packet.extend_from_slice(&DST4);
    packet.extend_from_slice(l4);
    packet
}

/// An IPv6 packet from [`SRC6`] to [`DST6`]; `rest` follows the fixed header.
pub fn ipv6(next_header: u8, rest: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[next_header, 64]);
    packet.extend_from_slice(&SRC6);
    packet.extend_from_slice(&DST6);
    packet.extend_from_slice(rest);
    packet
}

/// A TCP segment (20-byte header) with `payload` bytes.
pub fn tcp(src: u16, dst: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&src.to_be_bytes());
    segment.extend_from_slice(&dst.to_be_bytes());
    segment.extend_from_slice(&[0; 8]); // seq, ack
    segment.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    segment.extend(std::iter::repeat_n(0xab, payload));
    segment
}

/// A UDP datagram with `payload` bytes.
pub fn udp(src: u16, dst: u16, payload: usize) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&src.to_be_bytes());
    datagram.extend_from_slice(&dst.to_be_bytes());
    datagram.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend(std::iter::repeat_n(0xcd, payload));
    datagram
}
