//! NAT through a small SNAT pool: many clients, one after another, on the
//! same few SNAT 4-tuples while the backend still holds the earlier
//! connections in TIME_WAIT. veer puts every flow's TCP timestamps on its own
//! clock, so the backend takes each new SYN at once, and a closed flow's
//! port goes to the next flow a second later. Real TCP in namespaces, the
//! kernels' own counters. Needs root.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd},
    time::Duration,
};

use veer::dataplane::MapReader;
use veer_abi::GlobalCounter;
use veer_tests::deployment::Deployment;

/// One request from `src` (a connection bound there): the backend's name.
fn fetch_from(src: Ipv4Addr, to: SocketAddr) -> anyhow::Result<String> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)))?;
    let IpAddr::V4(ip) = to.ip() else { anyhow::bail!("IPv4 only") };
    connect(fd.as_raw_fd(), &SockaddrIn::from(std::net::SocketAddrV4::new(ip, to.port())))?;
    // SAFETY: a connected socket we own, handed over whole.
    let mut s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"name\n")?;
    let mut name = String::new();
    s.read_to_string(&mut name)?;
    Ok(name.trim_end().to_string())
}

#[test]
fn a_small_snat_pool_serves_clients_back_to_back_through_the_backends_time_wait() {
    // Each CPU takes over only the ports of its own residue class (two
    // CPUs: even or odd), so a round opens half the pool: however its SYNs
    // fall on the CPUs, each finds a port it may take.
    const PORTS: u16 = 16;
    const PER_ROUND: usize = PORTS as usize / 2;
    const ROUNDS: usize = 5;
    let s = Deployment::new("natreuse", 1);
    s.strip_vips();
    let daemon = format!("snat_ports = \"20000-{}\"\nsyn_cookies = \"off\"\n", 20000 + PORTS - 1);
    let text = s
        .config_with(65537, &[1], &daemon, "", |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"");
    s.write(&text);
    let d = s.start();
    d.wait_up_in_ring("web", &["b1"]).unwrap_or_else(|e| panic!("{e:#}"));

    // Four client addresses: four timestamp clocks (Linux offsets a
    // connection's timestamps by a hash of its address pair), all through
    // the same SNAT 4-tuples.
    let client = &s.tb.client;
    let lb = &s.tb.lb;
    let mac = veer::config::fmt_mac(&client.mac);
    let sources: Vec<Ipv4Addr> = (0..4).map(|k| Ipv4Addr::new(10, 77, 0, 101 + k)).collect();
    for a in &sources {
        client.ns.exec(&["ip", "addr", "add", &format!("{a}/24"), "dev", "eth0"]).unwrap();
        lb.ns
            .exec(&["ip", "neigh", "replace", &a.to_string(), "lladdr", &mac, "dev", "eth0", "nud", "permanent"])
            .unwrap();
    }
    let backend_ns = &s.tb.backends[0].ns;
    let (retrans0, paws0) = (client.ns.tcp_ext("TCPSynRetrans").unwrap(), backend_ns.tcp_ext("PAWSEstab").unwrap());
    let pins = s.pins();
    let taken0 = pins.global_counter(GlobalCounter::NatTakenOver).unwrap();

    // Each round uses half the pool; the next starts once its flows have
    // been closed for the linger (1 s), so that it may take them over.
    let mut n = 0;
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let src = sources[(round * PER_ROUND + i) % sources.len()];
            let name = client.ns.run(|| fetch_from(src, s.vip())).unwrap();
            assert_eq!(name.as_deref().ok(), Some("b1"), "round {round}, connection {i} from {src}: {name:?}");
            n += 1;
        }
        if round + 1 < ROUNDS {
            // The linger after a close is the subject here, not a wait for
            // an event: the next round's flows may take these ports over.
            std::thread::sleep(Duration::from_millis(1200));
        }
    }
    let taken = pins.global_counter(GlobalCounter::NatTakenOver).unwrap() - taken0;
    assert!(taken >= PER_ROUND as u64, "{taken} of {n} flows took over a closed flow's port");
    assert_eq!(pins.global_counter(GlobalCounter::DropNatExhausted).unwrap(), 0, "no flow was refused a port");
    assert_eq!(client.ns.tcp_ext("TCPSynRetrans").unwrap() - retrans0, 0, "no SYN had to be sent twice");
    assert_eq!(backend_ns.tcp_ext("PAWSEstab").unwrap() - paws0, 0, "the backend refused no segment as old (PAWS)");
}
