//! What veerd asks the kernel about the network: interface indexes and MACs
//! (ioctl, so it works in the daemon's network namespace whatever /sys shows)
//! and next-hop MACs from the neighbour table (rtnetlink).

use std::{io, net::IpAddr, os::fd::AsRawFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    rule::{RuleAction, RuleAttribute, RuleMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Moves the calling thread into network namespace `name` (under
/// `/run/netns`). Unlike `ip netns exec`, the mounts stay the host's, so pins
/// made afterwards land in the host's bpffs and outlive the process.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// The kernel's cookie for the calling thread's network namespace
/// (`SO_NETNS_COOKIE`, kernel 5.14+). Unlike a name or an inode number it is
/// never reused while the machine is up, so it tells a namespace from one
/// made later under the same name.
pub fn netns_cookie() -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").or_else(|_| std::net::UdpSocket::bind("[::1]:0"))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The names under `/run/netns`, and "host" for the init namespace, by
/// their cookies (each looked up from a short-lived thread inside it).
pub fn netns_names() -> std::collections::HashMap<u64, String> {
    let mut names: Vec<(String, std::path::PathBuf)> = vec![("host".into(), "/proc/1/ns/net".into())];
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        names.extend(dir.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())));
    }
    names
        .into_iter()
        .filter_map(|(name, path)| {
            let cookie = std::thread::spawn(move || -> io::Result<u64> {
                let f = std::fs::File::open(path)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                netns_cookie()
            })
            .join()
            .ok()?
            .ok()?;
            Some((cookie, name))
        })
        .collect()
}

/// Name of interface `index` in the calling thread's namespace.
pub fn ifname(index: u32) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// Asks the kernel to resolve `addr`'s MAC (a datagram to the discard port
/// makes it send an ARP request or neighbour solicitation).
pub fn poke(addr: IpAddr) {
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    if let Ok(s) = std::net::UdpSocket::bind(bind) {
        let _ = s.set_nonblocking(true);
        let _ = s.send_to(&[], std::net::SocketAddr::new(addr, 9));
    }
}

/// The source address the kernel picks for traffic to `addr` (a UDP socket
/// connected there; nothing is sent).
pub fn source_toward(addr: IpAddr) -> io::Result<IpAddr> {
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect(std::net::SocketAddr::new(addr, 9))?;
    Ok(s.local_addr()?.ip())
}

/// Index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
}

/// MAC address of interface `name`.
pub fn iface_mac(name: &str) -> io::Result<[u8; 6]> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").or_else(|_| std::net::UdpSocket::bind("[::1]:0"))?;
    // SAFETY: ifreq is plain data; the name is NUL-terminated within IFNAMSIZ.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("interface name too long: {name}")));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of the ifreq we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member the ioctl wrote.
    let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// A resolved next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Its MAC.
    pub mac: [u8; 6],
    /// The interface it is reachable on.
    pub ifindex: u32,
}

/// Looks `addr` up in the neighbour table (ARP / NDP). Only usable entries
/// count: reachable, stale, delay, probe, permanent.
pub fn neighbour(addr: IpAddr) -> io::Result<Option<Neighbour>> {
    Ok(neighbour_table(addr.is_ipv4())?.remove(&addr))
}

/// Every usable entry of the IPv4 (or IPv6) neighbour table.
pub fn neighbour_table(ipv4: bool) -> io::Result<std::collections::HashMap<IpAddr, Neighbour>> {
    let mut req = NeighbourMessage::default();
    req.header.family = if ipv4 { AddressFamily::Inet } else { AddressFamily::Inet6 };
    Ok(dump(RouteNetlinkMessage::GetNeighbour(req))?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => usable(&n),
            _ => None,
        })
        .collect())
}

/// Sends a dump request and collects every answer until the kernel's Done.
fn dump(request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut out = vec![0u8; msg.header.length as usize];
    msg.serialize(&mut out);
    socket.send(&out, 0)?;
    let mut found = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        let n = socket.recv(&mut buf, 0)?;
        let mut off = 0;
        while off < n {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")))?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => return Err(io::Error::other(format!("netlink dump: {e:?}"))),
                NetlinkPayload::InnerMessage(inner) => found.push(inner),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

fn usable(n: &NeighbourMessage) -> Option<(IpAddr, Neighbour)> {
    let ok_state = matches!(
        n.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    );
    if !ok_state {
        return None;
    }
    let mut dst = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLocalAddress(l) if l.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(l);
                mac = Some(m);
            }
            _ => {}
        }
    }
    Some((dst?, Neighbour { mac: mac?, ifindex: n.header.ifindex }))
}

/// Sends one rtnetlink change and waits for the kernel's answer.
fn change(payload: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(payload));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut out = vec![0u8; msg.header.length as usize];
    msg.serialize(&mut out);
    socket.send(&out, 0)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let n = socket.recv(&mut buf, 0)?;
    let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")))?;
    match m.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        _ => Ok(()),
    }
}

fn family(v4: bool) -> AddressFamily {
    if v4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Adds a policy-routing rule: packets marked `mark` under `mask` look up
/// `table`. Already there is fine.
pub fn add_fwmark_rule(v4: bool, mark: u32, mask: u32, table: u32) -> io::Result<()> {
    let mut r = RuleMessage::default();
    r.header.family = family(v4);
    r.header.action = RuleAction::ToTable;
    r.attributes = vec![RuleAttribute::FwMark(mark), RuleAttribute::FwMask(mask), RuleAttribute::Table(table)];
    match change(RouteNetlinkMessage::NewRule(r), NLM_F_CREATE | NLM_F_EXCL) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// Sets a host route to `dst` out of interface `ifindex` (on link) in `table`.
pub fn replace_link_route(dst: IpAddr, ifindex: u32, table: u32) -> io::Result<()> {
    let mut r = RouteMessage::default();
    r.header.address_family = family(dst.is_ipv4());
    r.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    r.header.protocol = RouteProtocol::Static;
    r.header.scope = RouteScope::Link;
    r.header.kind = RouteType::Unicast;
    let d = match dst {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    };
    r.attributes = vec![RouteAttribute::Destination(d), RouteAttribute::Oif(ifindex), RouteAttribute::Table(table)];
    change(RouteNetlinkMessage::NewRoute(r), NLM_F_CREATE | NLM_F_REPLACE)
}

/// Sets a permanent neighbour entry: `ip` is at `mac` on interface `ifindex`.
pub fn replace_permanent_neighbour(ip: IpAddr, ifindex: u32, mac: [u8; 6]) -> io::Result<()> {
    let mut n = NeighbourMessage::default();
    n.header.family = family(ip.is_ipv4());
    n.header.ifindex = ifindex;
    n.header.state = NeighbourState::Permanent;
    n.header.kind = RouteType::Unicast;
    let d = match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    };
    n.attributes = vec![NeighbourAttribute::Destination(d), NeighbourAttribute::LinkLocalAddress(mac.to_vec())];
    change(RouteNetlinkMessage::NewNeighbour(n), NLM_F_CREATE | NLM_F_REPLACE)
}

/// The routing protocol number veerd's VIP routes carry (`ip route show
/// proto 118`): how it tells its own routes in a table from others'.
pub const VIP_ROUTE_PROTOCOL: u8 = 118;

fn vip_route(dst: IpAddr, table: u32, metric: u32) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = family(dst.is_ipv4());
    r.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    r.header.protocol = RouteProtocol::Other(VIP_ROUTE_PROTOCOL);
    r.header.scope = RouteScope::Link;
    r.header.kind = RouteType::Unicast;
    // Tables above 255 only fit the attribute.
    r.header.table = if table < 256 { table as u8 } else { 252 };
    let d = match dst {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    };
    r.attributes = vec![RouteAttribute::Destination(d), RouteAttribute::Oif(1), RouteAttribute::Table(table)];
    if metric != 0 {
        r.attributes.push(RouteAttribute::Priority(metric));
    }
    r
}

/// Announces `dst` (a VIP, a SNAT address): a host route to it on `lo` in
/// `table` with `metric` (0: none), for the routing daemon (BIRD) to
/// export. Already there is fine.
pub fn announce_vip(dst: IpAddr, table: u32, metric: u32) -> io::Result<()> {
    change(RouteNetlinkMessage::NewRoute(vip_route(dst, table, metric)), NLM_F_CREATE | NLM_F_REPLACE)
}

/// Withdraws what [`announce_vip`] added. Already gone is fine.
pub fn withdraw_vip(dst: IpAddr, table: u32, metric: u32) -> io::Result<()> {
    match change(RouteNetlinkMessage::DelRoute(vip_route(dst, table, metric)), 0) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::ENOENT)) => Ok(()),
        r => r,
    }
}

/// The addresses announced in `table` (routes of [`VIP_ROUTE_PROTOCOL`]),
/// with their metrics.
pub fn announced_vips(table: u32) -> io::Result<Vec<(IpAddr, u32)>> {
    let mut found = Vec::new();
    for v4 in [true, false] {
        let mut req = RouteMessage::default();
        req.header.address_family = family(v4);
        for m in dump(RouteNetlinkMessage::GetRoute(req))? {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            if r.header.protocol != RouteProtocol::Other(VIP_ROUTE_PROTOCOL) {
                continue;
            }
            let in_table = r.attributes.iter().any(|a| matches!(a, RouteAttribute::Table(t) if *t == table))
                || (table < 256 && r.header.table as u32 == table);
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
                _ => None,
            });
            let metric = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            });
            if let (true, Some(d)) = (in_table, dst) {
                found.push((d, metric.unwrap_or(0)));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_index_and_a_zero_mac() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert_eq!(iface_mac("lo").unwrap(), [0; 6]);
        assert!(ifindex("veer-no-such-if").is_err());
    }

    #[test]
    fn neighbour_dump_runs() {
        // Loopback addresses never have neighbour entries; the dump itself must work.
        assert_eq!(neighbour("127.0.0.1".parse().unwrap()).unwrap(), None);
    }
}
