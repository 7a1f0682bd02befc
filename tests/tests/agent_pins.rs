//! `veerctl agent` on a host whose backends live in network namespaces
//! (containers): each namespace's `eth0` gets an agent of its own under one
//! pins root, pins of a deleted namespace or interface are found detached and
//! removed, and `agent status` says where each agent is really attached.
//! Real veths, the real program attached by the real veerctl. Needs root.

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::Value;
use veer_tests::{
    daemon::{bin, wait_until},
    netns::Netns,
};

const VIP: &str = "10.77.2.1";

/// The pins root of this test, removed with whatever is left in it.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        for ns in ["veer-agpin1", "veer-agpin2"] {
            let _ = veer_tests::netns::in_netns(ns, || veer::dataplane::agent::uninstall(&self.0, "eth0"));
        }
        let _ = veer::dataplane::agent::remove_detached(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A namespace with an `eth0` (a veth whose host side is `host_side`).
fn namespace(name: &str, host_side: &str) -> Netns {
    let ns = Netns::create(name).unwrap();
    let _ = veer_tests::netns::ip(&["link", "del", host_side]);
    veer_tests::netns::ip(&["link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", name]).unwrap();
    ns.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
    ns
}

fn veerctl(root: &Root, args: &[&str]) -> String {
    let out = Command::new(bin("veerctl")).args(args).arg("--pins").arg(&root.0).output().unwrap();
    assert!(out.status.success(), "veerctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn install(root: &Root, ns: &str) -> String {
    veerctl(root, &["agent", "install", "eth0", "--vip", VIP, "--netns", ns])
}

/// The XDP program attached to `eth0` in `ns`, as the kernel reports it.
fn kernel_says_attached(ns: &Netns) -> bool {
    ns.exec(&["ip", "-d", "link", "show", "eth0"]).unwrap().contains("prog/xdp")
}

fn agents(root: &Root) -> Vec<Value> {
    let v: Value = serde_json::from_str(&veerctl(root, &["--json", "agent", "status"])).unwrap();
    v.as_array().cloned().unwrap_or_else(|| panic!("agent status without IFACE lists agents: {v}"))
}

fn in_ns<'a>(list: &'a [Value], ns: &str) -> Vec<&'a Value> {
    list.iter().filter(|a| a["netns"] == ns).collect()
}

#[test]
fn every_namespace_gets_its_own_agent_and_dead_pins_are_found() {
    veer_tests::require_root();
    let root = Root(PathBuf::from("/sys/fs/bpf/veer-test-agent-pins"));
    let _ = std::fs::remove_dir_all(&root.0);
    let ns1 = namespace("veer-agpin1", "vagpin1");
    let ns2 = namespace("veer-agpin2", "vagpin2");

    // The same interface name in two namespaces: two agents.
    assert!(install(&root, "veer-agpin1").contains("attached to eth0 in netns veer-agpin1"));
    let second = install(&root, "veer-agpin2");
    assert!(second.contains("attached to eth0 in netns veer-agpin2"), "the second backend got none: {second}");
    assert!(kernel_says_attached(&ns1) && kernel_says_attached(&ns2));
    let list = agents(&root);
    assert_eq!(list.len(), 2, "{list:?}");
    for ns in ["veer-agpin1", "veer-agpin2"] {
        let a = in_ns(&list, ns);
        assert_eq!(a.len(), 1, "one agent in {ns}: {list:?}");
        assert_ne!(a[0]["attached_ifindex"], 0, "attached in {ns}");
        assert_eq!(a[0]["vips"][0], VIP);
    }
    assert!(install(&root, "veer-agpin2").contains("VIPs updated on eth0"), "installed twice is one agent");

    // The namespace goes (a container stopped): its pins are left attached to
    // nothing, status says so, and a new namespace of the same name gets a
    // real agent.
    drop(ns1);
    wait_until(Duration::from_secs(10), "the kernel to detach the deleted namespace's agent", || {
        agents(&root).iter().any(|a| a["attached_ifindex"] == 0)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let text = veerctl(&root, &["agent", "status"]);
    assert!(text.contains("DETACHED"), "status names the dead agent: {text}");
    let ns1 = namespace("veer-agpin1", "vagpin1");
    assert!(install(&root, "veer-agpin1").contains("attached to eth0 in netns veer-agpin1"));
    assert!(kernel_says_attached(&ns1));
    let list = agents(&root);
    assert_eq!(list.len(), 2, "the dead namespace's pins are gone: {list:?}");
    assert!(list.iter().all(|a| a["attached_ifindex"] != 0), "{list:?}");

    // The interface recreated in a living namespace: attached again, too.
    veer_tests::netns::ip(&["link", "del", "vagpin2"]).unwrap();
    let _ = veer_tests::netns::ip(&[
        "link",
        "add",
        "vagpin2",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        "veer-agpin2",
    ]);
    ns2.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
    assert!(!kernel_says_attached(&ns2));
    let again = install(&root, "veer-agpin2");
    assert!(again.contains("attached") && !again.contains("VIPs updated"), "{again}");
    assert!(kernel_says_attached(&ns2));

    // Uninstall from one namespace leaves the other's.
    assert!(veerctl(&root, &["agent", "uninstall", "eth0", "--netns", "veer-agpin2"]).contains("removed"));
    assert!(!kernel_says_attached(&ns2));
    assert!(kernel_says_attached(&ns1));
    let list = agents(&root);
    assert_eq!((list.len(), list[0]["netns"].as_str()), (1, Some("veer-agpin1")), "{list:?}");
}
