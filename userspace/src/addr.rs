//! Conversions between `std::net` types and the 16-byte ABI form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use veer_abi::{ipv4_mapped, is_ipv4_mapped, FlowKey, ServiceKey, IPPROTO_TCP, IPPROTO_UDP};

/// An address as the maps store it (IPv4-mapped for IPv4).
pub fn to_abi(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => ipv4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address stored in a map, back as an `IpAddr`.
pub fn from_abi(a: &[u8; 16]) -> IpAddr {
    if is_ipv4_mapped(a) {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The IANA protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }

    /// From an IANA protocol number.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            IPPROTO_TCP => Some(Self::Tcp),
            IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(format!("unknown protocol {s:?} (expected tcp or udp)")),
        }
    }
}

/// The service-table key of `vip:port/proto`.
pub fn service_key(vip: IpAddr, port: u16, proto: Protocol) -> ServiceKey {
    ServiceKey { addr: to_abi(vip), port, proto: proto.number(), _pad: 0 }
}

/// Human form of a service key: `10.0.0.1:80/tcp`, `[2001:db8::1]:80/udp`.
pub fn display_service(key: &ServiceKey) -> String {
    let proto = Protocol::from_number(key.proto).map_or_else(|| key.proto.to_string(), |p| p.to_string());
    format!("{}/{proto}", std::net::SocketAddr::new(from_abi(&key.addr), key.port))
}

/// The connection-table key of a flow.
pub fn flow_key(src: std::net::SocketAddr, dst: std::net::SocketAddr, proto: Protocol) -> FlowKey {
    FlowKey {
        src: to_abi(src.ip()),
        dst: to_abi(dst.ip()),
        sport: src.port(),
        dport: dst.port(),
        proto: proto.number(),
        _pad: [0; 3],
    }
}
