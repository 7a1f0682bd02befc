//! veer-agent behind a tunnel, and its bounces back through it, with the
//! real programs (BPF_PROG_TEST_RUN): the balancer encapsulates a SYN, the
//! agent on the backend takes it out of the tunnel for the listener there,
//! or, with nothing listening, sends it back inside the tunnel; the
//! balancer takes the bounce out, knows it came from the flow's backend and
//! sends the SYN to another one. Needs root.

use std::net::{IpAddr, SocketAddr};

use veer::dataplane::agent::{AgentProgram, Tunnels};
use veer_abi::{AgentConfig, AgentCounter, GlobalCounter, AGENT_DECAP_GUE, AGENT_DECAP_IPIP, ENCAP_GUE, ENCAP_IPIP};
use veer_tests::{
    frame::{self, L4},
    netns::Netns,
    seen::with_checksums,
    tunnel_lab::TunnelLab,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const GUE_PORT: u16 = 7777;

/// Where the inner packet starts, and the outer destination, of an
/// encapsulated frame.
fn tunnel_of(f: &[u8]) -> (usize, Vec<u8>) {
    let v4 = f[12..14] == [0x08, 0x00];
    let (ip_len, proto, dst) = if v4 { (20, f[23], f[30..34].to_vec()) } else { (40, f[20], f[38..54].to_vec()) };
    (14 + ip_len + if proto == 17 { 8 } else { 0 }, dst)
}

fn bounce_through_the_tunnel(tag: &str, vip_v6: bool, outer_v6: bool, encap: u16) {
    let lab = TunnelLab::new(tag, vip_v6, outer_v6, (encap, GUE_PORT), 3);
    let vip = lab.vip.ip();
    // The backend: the VIP on its loopback, the agent on the tunnel.
    let backend = Netns::create(&format!("veer-tunagent-{tag}")).unwrap();
    backend.exec(&["ip", "link", "set", "lo", "up"]).unwrap();
    let plen = if vip_v6 { "128" } else { "32" };
    backend.exec(&["ip", "addr", "add", &format!("{vip}/{plen}"), "dev", "lo"]).unwrap();
    let decap = if encap == ENCAP_GUE { AGENT_DECAP_GUE } else { AGENT_DECAP_IPIP };
    let cfg = Tunnels { decap: AgentConfig { decap, gue_port: GUE_PORT }, from: vec![lab.source] };
    let client: SocketAddr = if vip_v6 { "[2001:db8::7]:41000" } else { "192.0.2.7:41000" }.parse().unwrap();
    let syn = with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x02), b""));
    let (action, sent) = lab.run(&syn);
    assert_eq!(action, XDP_REDIRECT, "{tag}: the SYN goes out through the tunnel");
    let (inner, first) = tunnel_of(&sent);

    // Nothing listens: the agent sends it back inside the tunnel.
    let bounced = backend
        .run(|| {
            let agent = AgentProgram::load_with(&[vip], &cfg).unwrap();
            let out = agent.test_run(&sent).unwrap();
            assert_eq!(agent.counter(AgentCounter::Bounced).unwrap(), 1, "{tag}");
            out
        })
        .unwrap();
    assert_eq!(bounced.action, XDP_TX, "{tag}: bounced");
    let b = &bounced.frame;
    assert_eq!((&b[..6], &b[6..12]), (&sent[6..12], &sent[..6]), "{tag}: MACs swapped");
    let (src_at, len) = if outer_v6 { (22, 16) } else { (26, 4) };
    assert_eq!(b[src_at..src_at + len], sent[src_at + len..src_at + 2 * len], "{tag}: from the backend");
    assert_eq!(b[src_at + len..src_at + 2 * len], sent[src_at..src_at + len], "{tag}: to the tunnel source");
    assert_eq!(b[inner..], sent[inner..], "{tag}: the SYN inside untouched");

    // The balancer takes it out of the tunnel and sends it elsewhere.
    let (action, again) = lab.run(b);
    assert_eq!(action, XDP_REDIRECT, "{tag}: redispatched");
    let (inner2, second) = tunnel_of(&again);
    assert_ne!(second, first, "{tag}: to another backend");
    assert_eq!(again[inner2..], syn[14..], "{tag}: the client's SYN as it sent it");
    assert_eq!(lab.counter(GlobalCounter::Decapsulated), 1, "{tag}");
    assert_eq!(lab.counter(GlobalCounter::PassiveBounced), 1, "{tag}");

    // Anything else out of a tunnel to the balancer is dropped, never
    // routed on: no open IP-in-IP relay.
    let elsewhere: SocketAddr = if vip_v6 { "[2001:db8:77::1]:80" } else { "10.99.0.1:80" }.parse().unwrap();
    let foreign = with_checksums(frame::packet(client, elsewhere, L4::Tcp(0x02), b""));
    let forged = [&b[..inner], &foreign[14..]].concat();
    assert_eq!(lab.run(&forged).0, XDP_DROP, "{tag}: a tunnelled packet for no VIP");
    let udp = with_checksums(frame::packet(client, lab.vip, L4::Udp, b"....................")); // a SYN's size
    let forged = [&b[..inner], &udp[14..]].concat();
    assert_eq!(lab.run(&forged).0, XDP_DROP, "{tag}: a tunnelled UDP datagram");
    assert_eq!(lab.counter(GlobalCounter::DropNotABounce), 2, "{tag}");

    // With a listener the agent hands the inner packet to the kernel.
    backend
        .run(|| {
            let _listener = std::net::TcpListener::bind(SocketAddr::new(vip, 80)).unwrap();
            let agent = AgentProgram::load_with(&[vip], &cfg).unwrap();
            let out = agent.test_run(&again).unwrap();
            assert_eq!(out.action, XDP_PASS, "{tag}: kept");
            assert_eq!(out.frame[..12], again[..12], "{tag}: the frame's MACs as they came");
            assert_eq!(out.frame[12..14], syn[12..14], "{tag}: the inner packet's EtherType");
            assert_eq!(out.frame[14..], syn[14..], "{tag}: the inner packet");
            assert_eq!(agent.counter(AgentCounter::Decapsulated).unwrap(), 1, "{tag}");
            assert_eq!(agent.counter(AgentCounter::Kept).unwrap(), 1, "{tag}");
            // A router's congestion mark on the outer header reaches the
            // inner one (RFC 6040), its IPv4 checksum kept right.
            let c2: SocketAddr = if vip_v6 { "[2001:db8::7]:41001" } else { "192.0.2.7:41001" }.parse().unwrap();
            let ect = with_ecn(with_checksums(frame::packet(c2, lab.vip, L4::Tcp(0x02), b"")), 2);
            let (_, sent) = lab.run(&ect);
            let out = agent.test_run(&with_ecn(sent, 3)).unwrap();
            let inner_ecn = if vip_v6 { (out.frame[15] >> 4) & 3 } else { out.frame[15] & 3 };
            assert_eq!(inner_ecn, 3, "{tag}: congestion experienced, inside");
            if !vip_v6 {
                assert_eq!(veer_abi::csum::checksum(&out.frame[14..34]), 0, "{tag}: inner IPv4 checksum");
            }
            // Not one of its VIPs inside: left as it came.
            let other: IpAddr = if vip_v6 { "2001:db8:100::2" } else { "10.0.0.101" }.parse().unwrap();
            let agent = AgentProgram::load_with(&[other], &cfg).unwrap();
            let out = agent.test_run(&again).unwrap();
            assert_eq!((out.action, &out.frame), (XDP_PASS, &again), "{tag}: no VIP of this agent's");
            // From no balancer's tunnel source: left as it came.
            let stranger = Tunnels {
                from: vec![if outer_v6 { "2001:db8:1::99" } else { "10.1.0.99" }.parse().unwrap()],
                ..cfg.clone()
            };
            let agent = AgentProgram::load_with(&[vip], &stranger).unwrap();
            assert_eq!(agent.test_run(&again).unwrap().frame, again, "{tag}: not from a --from address");
            // Not told to take packets out of tunnels: left as it came.
            let agent = AgentProgram::load(&[vip]).unwrap();
            assert_eq!(agent.test_run(&again).unwrap().frame, again, "{tag}: no --decap");
        })
        .unwrap();
}

/// `f` with the ECN bits of its IP header (at offset 14) set to `ecn`.
fn with_ecn(mut f: Vec<u8>, ecn: u8) -> Vec<u8> {
    if f[12..14] == [0x08, 0x00] {
        f[15] = (f[15] & !3) | ecn;
        frame::with_ipv4_checksum(f)
    } else {
        f[15] = (f[15] & !0x30) | (ecn << 4);
        f
    }
}

#[test]
fn ipip_ipv4_bounces_through_the_tunnel() {
    bounce_through_the_tunnel("ipip44", false, false, ENCAP_IPIP);
}

#[test]
fn ipip_ipv6_in_ipv4_bounces_through_the_tunnel() {
    bounce_through_the_tunnel("ipip64", true, false, ENCAP_IPIP);
}

#[test]
fn gue_ipv6_bounces_through_the_tunnel() {
    bounce_through_the_tunnel("gue66", true, true, ENCAP_GUE);
}

#[test]
fn gue_ipv4_in_ipv6_bounces_through_the_tunnel() {
    bounce_through_the_tunnel("gue46", false, true, ENCAP_GUE);
}
