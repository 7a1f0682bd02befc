//! Crafted frames through the real XDP program (BPF_PROG_TEST_RUN): actions,
//! rewritten bytes, and the maps the program updates. Needs root.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use veer::{
    dataplane::MapReader,
    dataplane::{flow_key, identity_of, Protocol, ServiceSpec},
    ring::RingMember,
};
use veer_abi::{hash::flow_hash, BackendState, GlobalCounter, Scheduler, NO_BACKEND, SERVICE_F_FALLBACK_PASS};
use veer_tests::{
    frame::{self, L4},
    lab::{backend_mac, Lab, XDP_DROP, XDP_PASS, XDP_TX},
};

#[test]
fn non_vip_frames_pass_unchanged() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1]);
    let frames = vec![
        frame::tcp_syn(lab.client(1000), "10.0.0.99:80".parse().unwrap()),
        frame::tcp_syn(lab.client(1000), "10.0.0.100:81".parse().unwrap()), // VIP, other port
        frame::udp(lab.client(1000), "10.0.0.100:80".parse().unwrap(), b"x"), // VIP, other proto
        frame::udp("[2001:db8::1]:5".parse().unwrap(), "[2001:db8::2]:80".parse().unwrap(), b"hi"),
        frame::arp_request(),
        // Header only, LLDP EtherType (test runs need at least 14 bytes).
        [&frame::LB_MAC[..], &frame::CLIENT_MAC[..], &[0x88, 0xcc]].concat(),
    ];
    let before = lab.counter(GlobalCounter::Passed);
    for f in &frames {
        let out = lab.dp.test_run(f, 1).unwrap();
        assert_eq!(out.action, XDP_PASS, "frame {f:02x?}");
        assert_eq!(&out.frame, f, "a passed frame must be untouched");
    }
    assert_eq!(lab.counter(GlobalCounter::Passed) - before, frames.len() as u64);
}

#[test]
fn the_vip_filter_follows_the_services() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1]);
    let other = "10.0.0.101:80".parse().unwrap();
    let syn = frame::tcp_syn(lab.client(1000), other);
    let passed = lab.counter(GlobalCounter::Passed);
    assert_eq!(lab.send(&syn).0, XDP_PASS, "no service on 10.0.0.101 yet");
    assert_eq!(lab.counter(GlobalCounter::Passed), passed + 1);

    // A second VIP: its bit is set when its service is added.
    let key = veer::dataplane::service_key("10.0.0.101".parse().unwrap(), 80, Protocol::Tcp);
    let spec =
        ServiceSpec { id: 2, scheduler: Scheduler::Maglev, flags: 0, fallback_backend: NO_BACKEND, persistence_s: 0 };
    lab.dp.upsert_service(&key, spec).unwrap();
    let (b, mut m) = Lab::backend(2, 1);
    lab.dp.set_backend(2, &veer_abi::Backend { service: 2, ..b }).unwrap();
    m.id = 2;
    lab.dp.publish_pool(&key, 65537, &[m]).unwrap();
    assert_eq!(lab.send(&syn).1, Some(2), "the new VIP is served at once");

    // An address that folds to 10.0.0.100's bit (10^0^0^100 == 10^0^100^0)
    // is still asked about, and passed.
    let twin = frame::tcp_syn(lab.client(1000), "10.0.100.0:80".parse().unwrap());
    let out = lab.dp.test_run(&twin, 1).unwrap();
    assert_eq!((out.action, &out.frame), (XDP_PASS, &twin));

    lab.dp.remove_service(&key).unwrap();
    assert_eq!(lab.send(&syn).0, XDP_PASS, "a removed VIP's packets are the kernel's again");
    assert_eq!(lab.send(&lab.syn(1000)).0, XDP_TX, "the other VIP keeps its service");
}

#[test]
fn an_established_flow_follows_its_service_not_a_reused_service_id() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1]);
    let a = lab.send(&lab.syn(7000)).1.unwrap();
    let ack = lab.ack(7000);
    assert_eq!(lab.send(&ack).1, Some(a));
    assert_eq!(lab.send(&ack).1, Some(a), "the established flow's entry is hit");
    // The service goes; another (port 81 of the same VIP) takes its id and
    // its backends. The old flow's entry still names id 1.
    lab.dp.remove_service(&lab.key).unwrap();
    let key81 = veer::dataplane::service_key(lab.vip, 81, Protocol::Tcp);
    let spec =
        ServiceSpec { id: 1, scheduler: Scheduler::Maglev, flags: 0, fallback_backend: NO_BACKEND, persistence_s: 0 };
    lab.dp.upsert_service(&key81, spec).unwrap();
    let members: Vec<_> = (0..2).map(|i| Lab::backend(i, 1).1).collect();
    lab.dp.publish_pool(&key81, 65537, &members).unwrap();
    let passed = lab.counter(GlobalCounter::Passed);
    let out = lab.dp.test_run(&ack, 1).unwrap();
    assert_eq!((out.action, &out.frame), (XDP_PASS, &ack), "port 80 has no service any more");
    assert_eq!(lab.counter(GlobalCounter::Passed), passed + 1);
    // And the new service works, established flows included.
    let to81 = |flags| frame::packet(lab.client(7001), SocketAddr::new(lab.vip, 81), L4::Tcp(flags), b"x");
    let b = lab.send(&to81(0x02)).1.unwrap();
    assert_eq!(lab.send(&to81(0x10)).1, Some(b));
    assert_eq!(lab.send(&to81(0x10)).1, Some(b));
}

fn check_rewrite(vip: &str, proto: Protocol) {
    let lab = Lab::new(vip, proto, Scheduler::Maglev, &[1, 2, 3]);
    let ring = lab.dp.ring(&lab.key).unwrap();
    for port in 1000..1040u16 {
        let src = lab.client(port);
        let f = match proto {
            Protocol::Tcp => frame::tcp_syn(src, lab.vip_addr()),
            Protocol::Udp => frame::udp(src, lab.vip_addr(), b"payload"),
        };
        let (action, backend, _) = lab.send(&f);
        assert_eq!(action, XDP_TX, "{vip} {proto} port {port}");
        // The program must pick what userspace computes from the same ring and hash.
        let expect = ring[(flow_hash(&flow_key(src, lab.vip_addr(), proto)) % ring.len() as u32) as usize];
        assert_eq!(backend, Some(expect), "{vip} {proto} port {port}");
    }
    assert_eq!(lab.counter(GlobalCounter::Transmitted), 40);
}

#[test]
fn ipv4_tcp_is_rewritten_to_the_chosen_backend() {
    check_rewrite("10.0.0.100", Protocol::Tcp);
}

#[test]
fn ipv4_udp_is_rewritten_to_the_chosen_backend() {
    check_rewrite("10.0.0.100", Protocol::Udp);
}

#[test]
fn ipv6_tcp_is_rewritten_to_the_chosen_backend() {
    check_rewrite("2001:db8::100", Protocol::Tcp);
}

#[test]
fn ipv6_udp_is_rewritten_to_the_chosen_backend() {
    check_rewrite("2001:db8::100", Protocol::Udp);
}

#[test]
fn same_five_tuple_always_reaches_the_same_backend() {
    for sched in [Scheduler::Maglev, Scheduler::RoundRobin] {
        let lab = Lab::new("10.0.0.100", Protocol::Tcp, sched, &[1, 1, 1]);
        let (_, first, _) = lab.send(&lab.syn(4242));
        let first = first.expect("forwarded");
        let f = lab.ack(4242);
        for _ in 0..50 {
            // Round robin would move on for a new flow; the connection table holds it.
            let _ = lab.send(&lab.syn(9000)); // other flows in between
            assert_eq!(lab.send(&f).1, Some(first), "{sched:?}");
        }
        let entry = lab.dp.flow(&flow_key(lab.client(4242), lab.vip_addr(), Protocol::Tcp)).unwrap().expect("pinned");
        assert_eq!(entry.backend, first);
        assert_eq!(entry.service, 1);
    }
}

#[test]
fn flow_of_a_backend_set_down_moves_on_its_next_packet() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1, 1]);
    let a = lab.send(&lab.syn(5555)).1.unwrap();
    let f = lab.ack(5555);
    assert_eq!(lab.send(&f).1, Some(a), "the handshake's ACK follows the SYN");
    let new_before = lab.dp.service_counters(1).unwrap().new_flows;
    // Only the state word changes: the ring still lists `a`.
    lab.dp.set_backend_state(a, BackendState::Down).unwrap();
    let (action, b, _) = lab.send(&f);
    let b = b.unwrap();
    assert_eq!(action, XDP_TX);
    assert_ne!(b, a, "flow must leave the down backend at once");
    let entry = lab.dp.flow(&flow_key(lab.client(5555), lab.vip_addr(), Protocol::Tcp)).unwrap().unwrap();
    assert_eq!(entry.backend, b, "connection-table entry overwritten");
    assert_eq!(lab.dp.service_counters(1).unwrap().new_flows, new_before + 1, "rescheduling counts as a new flow");
    // It stays on the new backend.
    assert_eq!(lab.send(&f).1, Some(b));
    // Disabled behaves the same.
    lab.dp.set_backend_state(b, BackendState::Disabled).unwrap();
    let c = lab.send(&f).1.unwrap();
    assert!(c != a && c != b);
}

#[test]
fn draining_backend_keeps_existing_flow_and_gets_no_new_ones() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1, 1]);
    let a = lab.send(&lab.syn(7777)).1.unwrap();
    let f = lab.ack(7777);
    lab.dp.set_backend_state(a, BackendState::Draining).unwrap();
    for _ in 0..10 {
        assert_eq!(lab.send(&f).1, Some(a), "existing flow stays on the draining backend");
    }
    let mut others = 0;
    for port in 20000..20300 {
        let b = lab.send(&lab.syn(port)).1.unwrap();
        assert_ne!(b, a, "new flow from port {port} sent to a draining backend");
        others += 1;
    }
    assert_eq!(others, 300);
    assert_eq!(lab.send(&f).1, Some(a));
    // A new connection reusing the 5-tuple (a fresh SYN after the old one's
    // FIN) is a new flow: not to `a`.
    lab.send(&frame::packet(lab.client(7777), lab.vip_addr(), L4::Tcp(0x11), b""));
    let b = lab.send(&lab.syn(7777)).1.unwrap();
    assert_ne!(b, a, "a SYN reusing a drained flow's 5-tuple must be scheduled anew");
    assert_eq!(lab.send(&f).1, Some(b), "and the table now holds the new connection");
}

#[test]
fn fin_or_rst_marks_the_flow_closing() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1]);
    let key = |p| flow_key(lab.client(p), lab.vip_addr(), Protocol::Tcp);
    for (port, flags) in [(100u16, 0x11u8), (101, 0x04)] {
        lab.send(&lab.syn(port));
        assert_eq!(lab.dp.flow(&key(port)).unwrap(), None, "a SYN alone stays out of the connection table");
        assert_eq!(lab.dp.new_flow(&key(port)).unwrap().unwrap().flags, 0);
        let b = lab.send(&lab.ack(port)).1.unwrap();
        assert_eq!(lab.dp.new_flow(&key(port)).unwrap(), None, "the ACK moves the flow on");
        let active = lab.dp.active_flows(b).unwrap();
        assert_eq!(lab.dp.flow(&key(port)).unwrap().unwrap().flags, veer_abi::CONN_F_COUNTED, "data does not close");
        assert_eq!(active, 1, "established: counted active on its backend");
        let (action, ..) = lab.send(&frame::packet(lab.client(port), lab.vip_addr(), L4::Tcp(flags), &[]));
        assert_eq!(action, XDP_TX, "the closing packet still reaches the backend");
        assert_eq!(lab.dp.flow(&key(port)).unwrap().unwrap().flags, veer_abi::CONN_F_CLOSING, "flags {flags:#x}");
        assert_eq!(lab.dp.active_flows(b).unwrap(), 0, "closed: no longer active");
        // A second FIN changes nothing.
        lab.send(&frame::packet(lab.client(port), lab.vip_addr(), L4::Tcp(flags), &[]));
        assert_eq!(lab.dp.active_flows(b).unwrap(), 0);
    }
}

#[test]
fn source_hash_sends_every_flow_of_a_client_to_one_backend() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::SourceHash, &[1, 1, 1, 1]);
    let vip = lab.vip_addr();
    let mut per_client = std::collections::BTreeSet::new();
    for c in 0..64u8 {
        let ip: IpAddr = format!("198.51.100.{c}").parse().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for port in (1024..60000).step_by(997) {
            let (_, b, _) = lab.send(&frame::tcp_syn(SocketAddr::new(ip, port), vip));
            seen.insert(b.unwrap());
        }
        assert_eq!(seen.len(), 1, "client {ip} spread over {seen:?}");
        per_client.insert(*seen.iter().next().unwrap());
    }
    assert_eq!(per_client.len(), 4, "64 clients should cover all 4 backends");
}

#[test]
fn round_robin_follows_weights_for_new_flows() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::RoundRobin, &[3, 1]);
    pin_to_one_cpu();
    let mut count = [0u32; 2];
    for port in 1000..1400 {
        count[lab.send(&lab.syn(port)).1.unwrap() as usize] += 1;
    }
    // Cursors are per CPU, and each CPU walks the 3:1 sequence exactly. A
    // test run executes on the calling thread's CPU; pinned to one CPU, all
    // 400 flows walk one cursor: exactly 300:100. (Unpinned, the skew is
    // bounded by one period of 4 per CPU that took part.)
    assert_eq!(count, [300, 100], "weights 3:1 on one CPU's cursor");
}

#[test]
fn truncated_and_malformed_frames_for_a_vip_are_dropped_and_counted() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1]);
    let lab6 = Lab::new("2001:db8::100", Protocol::Udp, Scheduler::Maglev, &[1]);
    let syn = lab.syn(1234);
    let udp6 = frame::udp(lab6.client(1234), lab6.vip_addr(), b"0123456789");
    // Cut inside the TCP header, and one byte short of the IP length.
    let v4_cuts = [14 + 20 + 10, syn.len() - 1];
    for cut in v4_cuts {
        let (action, ..) = lab.send(&syn[..cut]);
        assert_eq!(action, XDP_DROP, "IPv4 frame cut at {cut}");
    }
    assert_eq!(lab.counter(GlobalCounter::DropTruncated), 2);
    let v6_cuts = [14 + 40 + 4, udp6.len() - 3];
    for cut in v6_cuts {
        assert_eq!(lab6.send(&udp6[..cut]).0, XDP_DROP, "IPv6 frame cut at {cut}");
    }
    assert_eq!(lab6.counter(GlobalCounter::DropTruncated), 2);
    // Cut inside the IP header, before the destination: it cannot be told to
    // be for a VIP, so it is the kernel's, untouched.
    for (l, f) in [(&lab, &syn[..14 + 12]), (&lab6, &udp6[..14 + 30])] {
        let out = l.dp.test_run(f, 1).unwrap();
        assert_eq!((out.action, &out.frame[..]), (XDP_PASS, f), "a runt IP header is passed untouched");
    }

    // IHL below 5, TCP data offset below 5: malformed.
    let mut bad_ihl = syn.clone();
    bad_ihl[14] = 0x44;
    assert_eq!(lab.send(&bad_ihl).0, XDP_DROP);
    let mut bad_doff = syn.clone();
    bad_doff[14 + 20 + 12] = 0x40;
    assert_eq!(lab.send(&bad_doff).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::DropMalformed), 2);
    // The same faults in a frame for another address are not veer's to judge.
    let passed = lab.counter(GlobalCounter::Passed);
    for mut f in [bad_ihl.clone(), bad_doff.clone()] {
        f[14 + 19] = 99; // destination 10.0.0.99: not a VIP
        let out = lab.dp.test_run(&f, 1).unwrap();
        assert_eq!((out.action, out.frame), (XDP_PASS, f), "a malformed non-VIP frame is passed untouched");
    }
    assert_eq!(lab.counter(GlobalCounter::Passed), passed + 2, "and counted as passed");

    // A fragment for the VIP: no ports to balance on.
    let mut frag = syn.clone();
    frag[14 + 6] = 0x20; // MF
    assert_eq!(lab.send(&frag).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::DropFragment), 1);
    // None of it was forwarded.
    assert_eq!(lab.counter(GlobalCounter::Transmitted), 0);
    assert_eq!(lab.dp.backend_counters(0).unwrap().packets, 0);
}

#[test]
fn no_backend_up_drops_or_passes_as_configured() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1]);
    lab.dp.set_backend_state(0, BackendState::Down).unwrap();
    lab.dp.set_backend_state(1, BackendState::Down).unwrap();
    assert_eq!(lab.send(&lab.syn(1)).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::DropNoBackend), 1);
    lab.dp
        .upsert_service(
            &lab.key,
            ServiceSpec {
                id: 1,
                scheduler: Scheduler::Maglev,
                flags: SERVICE_F_FALLBACK_PASS,
                fallback_backend: NO_BACKEND,
                persistence_s: 0,
            },
        )
        .unwrap();
    assert_eq!(lab.send(&lab.syn(1)).0, XDP_PASS);
    assert_eq!(lab.counter(GlobalCounter::FallbackPassed), 1);
    // A sorry backend takes precedence, and it need not be up.
    lab.dp
        .upsert_service(
            &lab.key,
            ServiceSpec { id: 1, scheduler: Scheduler::Maglev, flags: 0, fallback_backend: 1, persistence_s: 0 },
        )
        .unwrap();
    assert_eq!(lab.send(&lab.syn(1)).1, Some(1));
    assert_eq!(lab.counter(GlobalCounter::FallbackBackend), 1);
}

#[test]
fn counters_account_packets_bytes_and_flows() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1]);
    let f = frame::packet(lab.client(1), lab.vip_addr(), L4::Tcp(0x18), &[0u8; 100]);
    for _ in 0..5 {
        assert_eq!(lab.send(&f).1, Some(0));
    }
    let s = lab.dp.service_counters(1).unwrap();
    let b = lab.dp.backend_counters(0).unwrap();
    assert_eq!((s.packets, s.bytes, s.new_flows), (5, 5 * f.len() as u64, 1));
    assert_eq!(s, b);
    assert_eq!(lab.dp.flows().unwrap().len(), 1);
}

#[test]
fn backend_behind_another_interface_is_redirected_through_the_devmap() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1]);
    // Test runs see loopback as the ingress; give the backend another interface,
    // in a namespace of our own (devmap entries resolve there too).
    let ns = veer_tests::netns::Netns::create("veer-redirect").unwrap();
    ns.exec(&["ip", "link", "add", "egress0", "type", "veth", "peer", "name", "egress1"]).unwrap();
    ns.exec(&["ip", "link", "set", "egress0", "up"]).unwrap();
    let ifindex: u32 = ns.exec(&["cat", "/sys/class/net/egress0/ifindex"]).unwrap().trim().parse().unwrap();
    let mut b = lab.dp.backend(0).unwrap();
    b.ifindex = ifindex;
    b.src_mac = [0x02, 0x0e, 0, 0, 0, 0x01];
    lab.dp.set_backend(0, &b).unwrap();
    ns.run(|| {
        // Not in the devmap yet: dropped and counted, never sent.
        let out = lab.dp.test_run(&lab.syn(1), 1).unwrap();
        assert_eq!(out.action, XDP_DROP);
        assert_eq!(lab.counter(GlobalCounter::DropRedirect), 1);
        lab.dp.add_tx_port(ifindex).unwrap();
        let out = lab.dp.test_run(&lab.syn(2), 1).unwrap();
        assert_eq!(out.action, 4, "XDP_REDIRECT");
        assert_eq!(out.frame[..6], backend_mac(0));
        assert_eq!(out.frame[6..12], b.src_mac, "egress interface's MAC as source");
        assert_eq!(lab.counter(GlobalCounter::Redirected), 1);
    })
    .unwrap();
}

#[test]
fn a_backend_that_leaves_and_returns_gets_its_share_of_new_flows() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 2, 3]);
    let members = |skip: Option<u32>| -> Vec<RingMember> {
        (0..3u32)
            .filter(|i| Some(*i) != skip)
            .map(|i| RingMember {
                id: i,
                identity: identity_of(format!("10.1.0.{}", i + 10).parse().unwrap()),
                weight: i + 1,
            })
            .collect()
    };
    lab.dp.publish_pool(&lab.key, 65537, &members(Some(1))).unwrap();
    lab.dp.publish_pool(&lab.key, 65537, &members(None)).unwrap();
    let ring = lab.dp.ring(&lab.key).unwrap();
    let mut got = [0u32; 3];
    let mut predicted = [0u32; 3];
    for port in 30000..33000u16 {
        let b = lab.send(&lab.syn(port)).1.unwrap();
        got[b as usize] += 1;
        let h = flow_hash(&flow_key(lab.client(port), lab.vip_addr(), Protocol::Tcp));
        predicted[ring[(h % ring.len() as u32) as usize] as usize] += 1;
    }
    println!("after leave+return: dataplane {got:?}, userspace prediction {predicted:?}");
    assert_eq!(got, predicted);
    assert!(got[1].abs_diff(1000) < 150, "returning backend got {} of 3000 new flows", got[1]);
}

/// Pins the calling thread to the CPU it runs on, so that per-CPU state (the
/// round-robin cursor) is one CPU's.
fn pin_to_one_cpu() {
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(cpu >= 0, "sched_getcpu failed");
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu as usize).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
}

#[test]
fn a_persistent_client_keeps_its_backend_across_a_membership_change_while_it_is_up() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1]);
    let spec = |persistence_s| ServiceSpec {
        id: 1,
        scheduler: Scheduler::Maglev,
        flags: 0,
        fallback_backend: NO_BACKEND,
        persistence_s,
    };
    lab.dp.upsert_service(&lab.key, spec(60)).unwrap();
    let first = lab.send(&lab.syn(1000)).1.unwrap();
    // Membership change: two more backends.
    let mut members: Vec<_> = (0..2).map(|i| Lab::backend(i, 1).1).collect();
    for id in 2..4 {
        let (b, m) = Lab::backend(id, 1);
        lab.dp.set_backend(id, &b).unwrap();
        members.push(m);
    }
    lab.dp.publish_pool(&lab.key, 65537, &members).unwrap();
    let backends_of = |lab: &Lab, client: &str, ports: std::ops::Range<u16>| -> Vec<u32> {
        ports
            .map(|p| {
                let src = SocketAddr::new(client.parse().unwrap(), p);
                lab.send(&frame::tcp_syn(src, lab.vip_addr())).1.unwrap()
            })
            .collect()
    };
    let sticky = backends_of(&lab, "192.0.2.7", 1001..1041);
    assert!(sticky.iter().all(|&b| b == first), "every new flow of the client on {first}: {sticky:?}");
    // Without persistence the first client spreads as well.
    lab.dp.upsert_service(&lab.key, spec(0)).unwrap();
    let spread = backends_of(&lab, "192.0.2.7", 1101..1141);
    assert!(spread.iter().collect::<HashSet<_>>().len() >= 3, "{spread:?}");
    lab.dp.upsert_service(&lab.key, spec(60)).unwrap();
    assert_eq!(backends_of(&lab, "192.0.2.7", 1200..1201), [first], "the client's entry outlived the switch");

    // Its backend goes down: the client moves, and sticks to the new one,
    // also once the first is back.
    lab.dp.set_backend_state(first, BackendState::Down).unwrap();
    let second = backends_of(&lab, "192.0.2.7", 2000..2001)[0];
    assert_ne!(second, first);
    lab.dp.set_backend_state(first, BackendState::Up).unwrap();
    let after = backends_of(&lab, "192.0.2.7", 2001..2021);
    assert!(after.iter().all(|&b| b == second), "{after:?}");

    // Past the persistence time the client is scheduled afresh: by the
    // ring, on a 5-tuple the ring gives to another backend.
    let client: IpAddr = "192.0.2.7".parse().unwrap();
    let ring = lab.dp.ring(&lab.key).unwrap();
    let vip = lab.vip_addr();
    let on_ring = |p: u16| {
        let key = flow_key(SocketAddr::new(client, p), vip, Protocol::Tcp);
        ring[(flow_hash(&key) % ring.len() as u32) as usize]
    };
    let port = (3000..3200u16).find(|&p| on_ring(p) != second).unwrap();
    assert_eq!(backends_of(&lab, "192.0.2.7", port..port + 1), [second], "still within the persistence time");
    assert!(lab.dp.age_affinity(1, client, Duration::from_secs(61)).unwrap());
    let port = (3200..3400u16).find(|&p| on_ring(p) != second).unwrap();
    assert_eq!(backends_of(&lab, "192.0.2.7", port..port + 1), [on_ring(port)], "expired: the ring decides");
}

#[test]
fn least_flows_sends_new_flows_away_from_the_backend_with_more_active_flows() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::LeastFlows, &[1, 1]);
    // 300 established flows on backend 0 (backend 1 down meanwhile), then
    // 40 of them end with a FIN.
    lab.dp.set_backend_state(1, BackendState::Down).unwrap();
    for p in 1000..1300u16 {
        assert_eq!(lab.send(&lab.syn(p)).1, Some(0));
        assert_eq!(lab.send(&lab.ack(p)).1, Some(0));
    }
    for p in 1000..1040u16 {
        lab.send(&frame::packet(lab.client(p), lab.vip_addr(), L4::Tcp(0x11), &[]));
    }
    assert_eq!(lab.dp.active_flows(0).unwrap(), 260, "established flows, less the ended ones");
    assert_eq!(lab.dp.active_flows(1).unwrap(), 0);
    lab.dp.set_backend_state(1, BackendState::Up).unwrap();

    // New flows: a flow whose own slot is backend 1 stays there (backend 0
    // has more); one whose slot is backend 0 moves to 1 whenever the random
    // second choice is 1 (half the time).
    let ring = lab.dp.ring(&lab.key).unwrap();
    let (mut own0, mut moved) = (0, 0);
    for p in 2000..2200u16 {
        let slot =
            ring[(flow_hash(&flow_key(lab.client(p), lab.vip_addr(), Protocol::Tcp)) % ring.len() as u32) as usize];
        let got = lab.send(&lab.syn(p)).1.unwrap();
        if slot == 1 {
            assert_eq!(got, 1, "port {p}: its own slot's backend has fewer flows");
        } else {
            own0 += 1;
            moved += usize::from(got == 1);
        }
    }
    assert!(own0 > 50, "the ring gives backend 0 about half the ports: {own0}");
    assert!(moved > 0 && moved < own0, "about half of backend 0's {own0} flows moved to 1: {moved}");
    // Under Maglev the same flows would all have stayed: the scheduler,
    // not the ring, moved them.
    lab.set_flags(Scheduler::Maglev, 0);
    for p in 3000..3050u16 {
        let slot =
            ring[(flow_hash(&flow_key(lab.client(p), lab.vip_addr(), Protocol::Tcp)) % ring.len() as u32) as usize];
        assert_eq!(lab.send(&lab.syn(p)).1, Some(slot));
    }
}

#[test]
fn each_family_keeps_its_flows_in_tables_of_its_own() {
    for (vip, v6) in [("10.0.0.100", false), ("2001:db8::100", true)] {
        let lab = Lab::new(vip, Protocol::Tcp, Scheduler::Maglev, &[1, 1, 1]);
        let key = flow_key(lab.client(4242), lab.vip_addr(), Protocol::Tcp);
        let to = lab.send(&lab.syn(4242)).1.expect("forwarded");
        let u = lab.dp.table_usage().unwrap();
        let (new4, new6) = if v6 { (0, 1) } else { (1, 0) };
        assert_eq!((u.new_flows_v4, u.new_flows_v6, u.conns), (new4, new6, 0), "{vip}: the SYN's entry: {u:?}");
        assert_eq!(lab.dp.new_flow(&key).unwrap().map(|e| e.backend), Some(to), "{vip}: found by its full key");
        // The second packet moves it into its family's connection table.
        assert_eq!(lab.send(&lab.ack(4242)).1, Some(to), "{vip}");
        let u = lab.dp.table_usage().unwrap();
        assert_eq!((u.conns_v4, u.conns_v6, u.new_flows), (new4, new6, 0), "{vip}: promoted: {u:?}");
        assert_eq!(lab.dp.flow(&key).unwrap().map(|e| e.backend), Some(to), "{vip}");
        let flows = lab.dp.flows().unwrap();
        assert_eq!(flows.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![key], "{vip}: listed in full form");
    }
}
