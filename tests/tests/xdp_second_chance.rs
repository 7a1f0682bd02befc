//! A DSR flow's second chance, through the real XDP program
//! (BPF_PROG_TEST_RUN): established flows lose their entries after a ring
//! change (a flood of spoofed SYN+ACK pairs bigger than the connection
//! table), so their next packet goes to the new ring's backend; that
//! backend's agent bounces it (MACs swapped), and veer sends it to the
//! previous ring's backend, which the flow is then pinned to. A second
//! bounce is dropped. Needs root.

use std::net::{IpAddr, SocketAddr};

use veer::dataplane::{flow_key, MapReader, Protocol};
use veer_abi::{GlobalCounter, Scheduler, CONN_F_SECOND_CHANCE};
use veer_tests::{
    frame::{self, L4},
    lab::{backend_mac, Lab, XDP_DROP},
};

const CONN_TABLE: u32 = 2048;
const FLOWS: u16 = 400;

fn lab(scheduler: Scheduler) -> Lab {
    lab_at("10.0.0.100", scheduler)
}

fn lab_at(vip: &str, scheduler: Scheduler) -> Lab {
    Lab::with_tables(vip, Protocol::Tcp, scheduler, &[1, 1, 1], CONN_TABLE, 1024)
}

/// Opens connections (SYN, then the handshake's ACK): each client port with its backend.
fn establish(lab: &Lab, ports: std::ops::Range<u16>) -> Vec<(u16, u32)> {
    ports
        .map(|p| {
            let b = lab.send(&lab.syn(p)).1.expect("SYN forwarded");
            assert_eq!(lab.send(&lab.ack(p)).1, Some(b));
            (p, b)
        })
        .collect()
}

/// A fourth backend joins: the ring changes, the old one stays as the previous ring.
fn add_backend(lab: &mut Lab) {
    let mut members: Vec<_> = (0..3).map(|i| Lab::backend(i, 1).1).collect();
    let (b, m) = Lab::backend(3, 1);
    lab.dp.set_backend(3, &b).unwrap();
    members.push(m);
    lab.dp.publish_pool(&lab.key, 65537, &members).unwrap();
}

/// Spoofed SYN+ACK pairs from random sources: each pair promotes a flow
/// into the connection table, evicting established ones.
fn flood_pairs(lab: &Lab, n: usize) {
    let vip = lab.vip_addr();
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..n {
        let ip = if vip.is_ipv4() {
            IpAddr::from(rng.u32(..).to_be_bytes())
        } else {
            IpAddr::from(rng.u128(..).to_be_bytes())
        };
        let src = SocketAddr::new(ip, rng.u16(1024..));
        lab.dp.test_run(&frame::tcp_syn(src, vip), 1).expect("test run");
        lab.dp.test_run(&frame::packet(src, vip, L4::Tcp(0x10), b""), 1).expect("test run");
    }
}

/// `f` as the agent of backend `id` sends it back: MACs swapped.
fn bounced(f: &[u8], id: u32) -> Vec<u8> {
    let mut out = f.to_vec();
    out[..6].copy_from_slice(&frame::LB_MAC);
    out[6..12].copy_from_slice(&backend_mac(id));
    out
}

/// The backend the flow of client port `p` is pinned to, and its flags.
fn pinned(lab: &Lab, p: u16) -> Option<(u32, u32)> {
    let key = flow_key(lab.client(p), lab.vip_addr(), Protocol::Tcp);
    let e = lab.dp.flow(&key).unwrap().or(lab.dp.new_flow(&key).unwrap())?;
    Some((e.backend, e.flags))
}

#[test]
fn a_flow_lost_after_a_ring_change_gets_its_second_chance_on_the_previous_rings_backend() {
    second_chance_after_a_flood("10.0.0.100", Scheduler::Maglev);
}

#[test]
fn ipv6_a_flow_lost_after_a_ring_change_gets_its_second_chance() {
    second_chance_after_a_flood("2001:db8::100", Scheduler::Maglev);
}

/// Keeps the calling thread on CPU 0: the tables' LRU lists are per CPU, and
/// a flood evicts only entries its own CPU inserted.
fn stay_on_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

fn second_chance_after_a_flood(vip: &str, scheduler: Scheduler) {
    stay_on_cpu0();
    let mut lab = lab_at(vip, scheduler);
    let flows = establish(&lab, 20000..20000 + FLOWS);
    add_backend(&mut lab);
    flood_pairs(&lab, 3 * CONN_TABLE as usize);
    let usage = lab.dp.table_usage().unwrap();
    assert!(usage.conns_evicted > 0, "the flood evicted entries: {usage:?}");

    let mut moved = 0;
    for (i, (p, b)) in flows.iter().enumerate() {
        let ack = lab.ack(*p);
        let (_, to, _) = lab.send(&ack);
        let to = to.expect("sent to a backend");
        if to == *b {
            continue;
        }
        // Lost its entry and hashed to the new backend, which holds no such
        // connection. Every other flow: a second packet from the client
        // first, which promotes the new entry (the early path then sees the bounce).
        assert_eq!(to, 3, "port {p}: only flows hashed to the new backend move");
        moved += 1;
        if i % 2 == 0 {
            assert_eq!(lab.send(&ack).1, Some(3));
        }
        let (action, again, _) = lab.send(&bounced(&ack, 3));
        assert_eq!(again, Some(*b), "port {p}: bounced to the previous ring's backend (action {action})");
        let (backend, flags) = pinned(&lab, *p).expect("an entry");
        assert_eq!(backend, *b, "port {p}: re-pinned to the previous ring's backend");
        assert_ne!(flags & CONN_F_SECOND_CHANCE, 0, "port {p}: marked");
        // The client's next packets go there directly.
        assert_eq!(lab.send(&ack).1, Some(*b), "port {p}");
        assert_eq!(lab.send(&ack).1, Some(*b), "port {p}");
        // Bounced again (that backend has no such connection either): dropped.
        assert_eq!(lab.send(&bounced(&ack, *b)).0, XDP_DROP, "port {p}: a second bounce");
    }
    eprintln!("{moved} of {FLOWS} flows lost to the new backend, {} entries evicted", usage.conns_evicted);
    assert!(moved > FLOWS as u64 / 10, "a quarter of the flows hash to the new backend: {moved}");
    assert_eq!(lab.counter(GlobalCounter::SecondChance), moved);
    assert_eq!(lab.counter(GlobalCounter::DropSecondChance), moved);
}

#[test]
fn a_bounce_with_nowhere_else_to_go_is_dropped() {
    let mut lab = lab(Scheduler::Maglev);
    let flows = establish(&lab, 21000..21100);
    // One ring only: no previous ring to try.
    let (p, b) = flows[0];
    assert_eq!(lab.send(&bounced(&lab.ack(p), b)).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::DropSecondChance), 1);
    assert_eq!(pinned(&lab, p).unwrap().0, b, "the entry stays");
    // After a ring change, a flow whose backend both rings give.
    add_backend(&mut lab);
    let (p, b) = *flows.iter().find(|(p, b)| lab.send(&lab.ack(*p)).1 == Some(*b) && *p != flows[0].0).unwrap();
    assert_eq!(lab.send(&bounced(&lab.ack(p), b)).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::DropSecondChance), 2);
    assert_eq!(lab.counter(GlobalCounter::SecondChance), 0);
    // A SYN or a RST from a backend's MAC is no second chance (a bounced
    // SYN has its own path; RSTs are never bounced).
    let rst = frame::packet(lab.client(p), lab.vip_addr(), L4::Tcp(0x04), b"");
    assert_eq!(lab.send(&bounced(&rst, b)).1, Some(b), "a RST from the backend's MAC is forwarded as before");
}

#[test]
fn round_robin_has_no_previous_pick() {
    let mut lab = lab(Scheduler::RoundRobin);
    let flows = establish(&lab, 22000..22010);
    add_backend(&mut lab);
    let (p, b) = flows[0];
    assert_eq!(lab.send(&bounced(&lab.ack(p), b)).0, XDP_DROP, "round robin cannot recompute a flow's backend");
    assert_eq!(lab.counter(GlobalCounter::DropSecondChance), 1);
}

#[test]
fn the_agent_bounces_a_segment_no_connection_owns() {
    use std::io::{Read, Write};
    use veer::dataplane::agent::AgentProgram;
    use veer_abi::AgentCounter;
    use veer_tests::lab::{XDP_PASS, XDP_TX};
    let ns = veer_tests::netns::Netns::create("veer-agentlab2").unwrap();
    ns.exec(&["ip", "link", "set", "lo", "up"]).unwrap();
    ns.exec(&["ip", "addr", "add", "10.77.1.1/32", "dev", "lo"]).unwrap();
    let vip: IpAddr = "10.77.1.1".parse().unwrap();
    let client = SocketAddr::new("10.77.0.1".parse().unwrap(), 40000);
    ns.run(|| {
        let agent = AgentProgram::load(&[vip]).unwrap();
        let listener = std::net::TcpListener::bind("0.0.0.0:8080").unwrap();
        // A real connection to the VIP, established on this host.
        let mut conn = std::net::TcpStream::connect(SocketAddr::new(vip, 8080)).unwrap();
        let (mut accepted, peer) = listener.accept().unwrap();
        let seg = |src: SocketAddr, port: u16, flags: u8| {
            frame::tcp_segment(src, SocketAddr::new(vip, port), flags, 1, 1, &[])
        };
        for flags in [0x10, 0x18, 0x11] {
            let owned = seg(peer, 8080, flags);
            let out = agent.test_run(&owned).unwrap();
            assert_eq!((out.action, &out.frame), (XDP_PASS, &owned), "flags {flags:#x}: its connection takes it");
        }
        // Only a listener: it owns no established flow (and this ACK is no cookie of it).
        let unowned = seg(client, 8080, 0x10);
        let out = agent.test_run(&unowned).unwrap();
        assert_eq!(out.action, XDP_TX, "back to the balancer");
        assert_eq!(out.frame[..6], unowned[6..12], "to the MAC it came from");
        assert_eq!(out.frame[6..12], unowned[..6]);
        assert_eq!(out.frame[12..], unowned[12..], "the segment itself untouched");
        // No socket at all: data, FIN.
        for flags in [0x18, 0x11] {
            assert_eq!(agent.test_run(&seg(client, 8081, flags)).unwrap().action, XDP_TX, "flags {flags:#x}");
        }
        // A RST is never bounced; nor is anything for another address.
        assert_eq!(agent.test_run(&seg(client, 8081, 0x14)).unwrap().action, XDP_PASS, "a RST");
        assert_eq!(agent.test_run(&seg(client, 8081, 0x04)).unwrap().action, XDP_PASS, "a RST");
        let other = frame::tcp_segment(client, "10.77.0.12:8081".parse().unwrap(), 0x10, 1, 1, &[]);
        assert_eq!(agent.test_run(&other).unwrap().action, XDP_PASS, "not a VIP");
        // SYNs as before: kept by the listener, bounced with none.
        assert_eq!(agent.test_run(&seg(client, 8080, 0x02)).unwrap().action, XDP_PASS);
        assert_eq!(agent.test_run(&seg(client, 8081, 0x02)).unwrap().action, XDP_TX);
        assert_eq!(agent.counter(AgentCounter::Unowned).unwrap(), 3);
        assert_eq!(agent.counter(AgentCounter::Bounced).unwrap(), 1);
        assert_eq!(agent.counter(AgentCounter::Kept).unwrap(), 1);
        // The connection itself still works.
        conn.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    })
    .unwrap();
}

/// A raw IPv4 socket of `proto` in the calling thread's namespace.
fn raw_socket(proto: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// The sequence number of the SYN-ACK to client port `port` that `rx` (a
/// raw TCP socket) sees next.
fn synack_seq(rx: &std::os::fd::OwnedFd, port: u16) -> u32 {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < deadline {
        // SAFETY: a buffer of its length; MSG_DONTWAIT never blocks.
        let n = unsafe { libc::recv(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            continue;
        }
        let ip = &buf[..n as usize];
        let tcp = &ip[(ip[0] & 0x0f) as usize * 4..];
        if u16::from_be_bytes([tcp[2], tcp[3]]) == port && tcp[13] == 0x12 {
            return u32::from_be_bytes(tcp[4..8].try_into().unwrap());
        }
    }
    panic!("no SYN-ACK to port {port}");
}

#[test]
fn the_agent_keeps_the_ack_of_a_listeners_syn_cookie() {
    use std::os::fd::AsRawFd;
    use veer::dataplane::agent::AgentProgram;
    use veer_tests::lab::{XDP_PASS, XDP_TX};
    let ns = veer_tests::netns::Netns::create("veer-agentcookie").unwrap();
    ns.exec(&["ip", "link", "set", "lo", "up"]).unwrap();
    ns.exec(&["ip", "addr", "add", "10.77.1.1/32", "dev", "lo"]).unwrap();
    ns.exec(&["ip", "addr", "add", "10.77.0.1/32", "dev", "lo"]).unwrap();
    // Every SYN answered with a cookie: no request socket is kept.
    ns.sysctl("net.ipv4.tcp_syncookies", "2").unwrap();
    let vip = SocketAddr::new("10.77.1.1".parse().unwrap(), 8080);
    let client = SocketAddr::new("10.77.0.1".parse().unwrap(), 40000);
    ns.run(|| {
        let agent = AgentProgram::load(&[vip.ip()]).unwrap();
        let _listener = std::net::TcpListener::bind("0.0.0.0:8080").unwrap();
        let rx = raw_socket(libc::IPPROTO_TCP);
        let tx = raw_socket(libc::IPPROTO_RAW);
        let syn = frame::tcp_segment(client, vip, 0x02, 1000, 0, &frame::SYN_OPTIONS);
        // SAFETY: an all-zero sockaddr_in is valid; lengths are the buffers'.
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as u16;
        to.sin_addr.s_addr = u32::from_ne_bytes([10, 77, 1, 1]);
        let sent = unsafe {
            libc::sendto(
                tx.as_raw_fd(),
                syn[14..].as_ptr().cast(),
                syn.len() - 14,
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert!(sent > 0, "sending the SYN: {}", std::io::Error::last_os_error());
        let cookie = synack_seq(&rx, client.port());
        let ack = frame::tcp_segment(client, vip, 0x10, 1001, cookie.wrapping_add(1), &[]);
        assert_eq!(agent.test_run(&ack).unwrap().action, XDP_PASS, "the ACK of its cookie is the listener's");
        let forged = frame::tcp_segment(client, vip, 0x10, 1001, cookie.wrapping_add(2), &[]);
        assert_eq!(agent.test_run(&forged).unwrap().action, XDP_TX, "any other ACK no connection owns");
    })
    .unwrap();
}
