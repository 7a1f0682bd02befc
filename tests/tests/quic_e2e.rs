//! QUIC connection-ID routing end to end: real QUIC servers (quinn) on the
//! DSR backends put their veer server ID in their connection IDs; real
//! clients move to a new source port mid-connection (as a NAT rebinding
//! does) and keep talking to the same server. Without connection-ID routing
//! the new 5-tuple would be hashed afresh, to another backend two times in
//! three, and the connection would break. Needs root.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use veer::dataplane::MapReader;
use veer_abi::GlobalCounter;
use veer_tests::{deployment::Deployment, quic, topology::VIP};

const QUIC_PORT: u16 = 4433;

#[test]
fn a_quic_connection_whose_client_port_changes_stays_on_its_backend() {
    let s = Deployment::new("quic", 3);
    let service = format!(
        "[[service]]\nname = \"quic\"\nvip = \"{VIP}\"\nport = {QUIC_PORT}\nprotocol = \"udp\"\nquic = true\n\n\
         [service.health]\nkind = \"tcp\"\nport = 80\ninterval = \"50ms\"\nfast_interval = \"20ms\"\ntimeout = \"40ms\"\n"
    );
    let mut text = s.config(65537, &[1, 1, 1], |_| String::new());
    text += &format!("\n{service}");
    for b in &s.tb.backends {
        text += &format!("\n[[service.backend]]\nname = \"{}\"\naddress = \"{}\"\n", b.name, b.ip);
    }
    s.write(&text);
    let d = s.start();
    let names: Vec<&str> = s.tb.backends.iter().map(|b| b.name.as_str()).collect();
    d.wait_up_in_ring("quic", &names).unwrap();
    // Each server hands out connection IDs with the server ID veerd gave
    // its backend (its id plus one: `veerctl backends` shows it).
    let status = d.status().unwrap();
    for b in &s.tb.backends {
        let id = status.backend("quic", &b.name).expect("in status").id;
        let listen = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), QUIC_PORT);
        quic::serve(&b.ns, listen, &b.name, veer_abi::quic_server_id(id)).unwrap();
    }
    let vip = SocketAddr::new(VIP.into(), QUIC_PORT);
    let mut served = HashSet::new();
    for i in 0..20 {
        let m = s.tb.client.ns.run(|| quic::migrate(vip)).unwrap().unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
        assert_ne!(m.ports.0, m.ports.1, "connection {i}: the client moved to a new port");
        assert_eq!(m.before, m.after, "connection {i}: the same server after the move ({:?})", m.ports);
        served.insert(m.before);
    }
    assert!(served.len() >= 2, "the handshakes were balanced over the backends: {served:?}");
    let routed = s.pins().global_counter(GlobalCounter::QuicRouted).unwrap();
    assert!(routed >= 20, "short-header packets routed by their connection ID: {routed}");
    println!("20 of 20 QUIC connections stayed on their backend across a port change; {routed} packets routed by CID");
    // veerctl shows each backend's server ID.
    let (ok, out, err) = veer_tests::daemon::veerctl(&s.cfg, &["backends", "quic"]);
    assert!(ok, "{err}");
    for b in &s.tb.backends {
        let sid = veer_abi::quic_server_id(status.backend("quic", &b.name).expect("in status").id);
        assert!(out.contains(&format!("quic server id {sid} (0x{sid:04x})")), "{out}");
    }
}
