//! The rules a config and the API share: names, weights, MAC addresses.
//! One home, so that what `veerd check` accepts is what `add-backend`
//! accepts, and what the runtime file's `service/backend` keys can hold.

use std::{fmt, net::IpAddr, ops::RangeInclusive, str::FromStr};

/// Weights a backend may have (drain a backend to stop its new flows).
pub const WEIGHTS: RangeInclusive<u32> = 1..=65535;

/// Longest service or backend name.
pub const NAME_MAX: usize = 63;

/// Why a value breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// An empty name.
    #[error("must not be empty")]
    EmptyName,
    /// A name with a character outside the charset.
    #[error("{0:?}: use letters, digits, '.', '-' and '_' only")]
    NameCharset(String),
    /// A name over [`NAME_MAX`].
    #[error("{0:?} is longer than {NAME_MAX} characters")]
    NameLength(String),
    /// A weight outside [`WEIGHTS`].
    #[error("weight {0} out of range: 1 to 65535 (drain a backend to stop new flows)")]
    Weight(u32),
    /// A name that does not start with a letter or digit (it would read
    /// as an option on a command line).
    #[error("{0:?}: must start with a letter or digit")]
    NameStart(String),
    /// Not a MAC address.
    #[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
    Mac(String),
    /// An address no backend can have.
    #[error("{0} cannot be a backend: {1}")]
    Address(IpAddr, &'static str),
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`): judged as the IPv4
    /// address it holds, and refused as written.
    #[error("{0} cannot be a backend: an IPv4-mapped IPv6 address{note}", note = mapped_note(.1))]
    Mapped(IpAddr, Option<&'static str>),
    /// A backend of the other address family than its service's VIP.
    #[error("{backend} is not an {family} address like the VIP {vip}")]
    Family {
        /// The backend's address.
        backend: IpAddr,
        /// The VIP.
        vip: IpAddr,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
}

/// A service or backend name: letters, digits, `.`, `-`, `_`, starting with
/// a letter or digit, at most [`NAME_MAX`] characters (so `service/backend`
/// keys stay unambiguous and no name reads as a command-line option).
pub fn check_name(name: &str) -> Result<(), RuleError> {
    if name.is_empty() {
        return Err(RuleError::EmptyName);
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(RuleError::NameStart(name.into()));
    }
    if name.len() > NAME_MAX {
        return Err(RuleError::NameLength(name.into()));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(RuleError::NameCharset(name.into()));
    }
    Ok(())
}

/// A weight within [`WEIGHTS`].
pub fn check_weight(w: u32) -> Result<(), RuleError> {
    if WEIGHTS.contains(&w) {
        Ok(())
    } else {
        Err(RuleError::Weight(w))
    }
}

/// An address a backend of a service on `vip` may have: a unicast host
/// address of the VIP's family, written in that family. Unspecified,
/// loopback, multicast, the IPv4 broadcast address and reserved space
/// (240.0.0.0/4, 0.0.0.0/8) would send traffic nowhere or everywhere;
/// link-local addresses (169.254.0.0/16, fe80::/10) are only meaningful on
/// one link, which a backend address does not name. An IPv4-mapped IPv6
/// address (`::ffff:127.0.0.1`) is judged as the IPv4 address it holds, and
/// refused as written: write the IPv4 address.
pub fn check_backend_address(address: IpAddr, vip: IpAddr) -> Result<(), RuleError> {
    check_backend_address_for(address, vip, false)
}

/// [`check_backend_address`] for a service that may reach backends of
/// either family (`tunnelled`: IPIP or GUE, the outer header's family is
/// the backend's).
pub fn check_backend_address_for(address: IpAddr, vip: IpAddr, tunnelled: bool) -> Result<(), RuleError> {
    let canonical = address.to_canonical();
    if canonical != address {
        return Err(RuleError::Mapped(address, unusable(canonical)));
    }
    if let Some(why) = unusable(address) {
        return Err(RuleError::Address(address, why));
    }
    if address.is_ipv4() != vip.is_ipv4() && !tunnelled {
        let family = if vip.is_ipv4() { "IPv4" } else { "IPv6" };
        return Err(RuleError::Family { backend: address, vip, family });
    }
    Ok(())
}

/// What [`RuleError::Mapped`] adds: why the IPv4 address is no backend
/// either, or how to write it.
fn mapped_note(why: &Option<&'static str>) -> String {
    match why {
        Some(why) => format!(" of a {why}"),
        None => ": write the IPv4 address".into(),
    }
}

/// Why no backend can have `a`, if so.
fn unusable(a: IpAddr) -> Option<&'static str> {
    if a.is_unspecified() {
        return Some("unspecified address");
    }
    if a.is_loopback() {
        return Some("loopback address");
    }
    if a.is_multicast() {
        return Some("multicast address");
    }
    match a {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast address"),
        IpAddr::V4(v4) if v4.octets()[0] >= 240 => Some("reserved address (240.0.0.0/4)"),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("\"this network\" address (0.0.0.0/8)"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local address (169.254.0.0/16)"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local address (fe80::/10)"),
        _ => None,
    }
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff` (or with `-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RuleError::Mac(s.into());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Self(m))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// A parsed MAC address.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    s.parse::<Mac>().ok().map(|m| m.0)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    Mac(*m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name("web-1.eu_2"), Ok(()));
        assert_eq!(check_name(""), Err(RuleError::EmptyName));
        assert_eq!(check_name("a/b"), Err(RuleError::NameCharset("a/b".into())));
        assert_eq!(check_name("sp ace"), Err(RuleError::NameCharset("sp ace".into())));
        assert!(matches!(check_name(&"x".repeat(64)), Err(RuleError::NameLength(_))));
        assert_eq!(check_name("-rf"), Err(RuleError::NameStart("-rf".into())));
        assert_eq!(check_name(".b"), Err(RuleError::NameStart(".b".into())));
    }

    #[test]
    fn backend_addresses() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(check_backend_address("10.1.0.2".parse().unwrap(), v4), Ok(()));
        assert_eq!(check_backend_address("fd00::2".parse().unwrap(), v6), Ok(()));
        assert_eq!(check_backend_address("2001:db8::2".parse().unwrap(), v6), Ok(()));
        assert_eq!(check_backend_address("223.255.255.254".parse().unwrap(), v4), Ok(()));
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.5", "255.255.255.255"] {
            assert!(matches!(check_backend_address(bad.parse().unwrap(), v4), Err(RuleError::Address(..))), "{bad}");
        }
        for bad in ["::", "::1", "ff02::1"] {
            assert!(matches!(check_backend_address(bad.parse().unwrap(), v6), Err(RuleError::Address(..))), "{bad}");
        }
        let e = check_backend_address("fd00::2".parse().unwrap(), v4).unwrap_err();
        assert_eq!(e.to_string(), "fd00::2 is not an IPv4 address like the VIP 10.0.0.1");
    }

    #[test]
    fn reserved_this_network_and_link_local_addresses_are_refused() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        for (bad, why) in [
            ("240.0.0.1", "reserved address (240.0.0.0/4)"),
            ("254.1.2.3", "reserved address (240.0.0.0/4)"),
            ("0.1.2.3", "\"this network\" address (0.0.0.0/8)"),
            ("169.254.1.1", "link-local address (169.254.0.0/16)"),
        ] {
            assert_eq!(
                check_backend_address(bad.parse().unwrap(), v4),
                Err(RuleError::Address(bad.parse().unwrap(), why))
            );
        }
        for bad in ["fe80::1", "febf:ffff::1"] {
            let e = check_backend_address(bad.parse().unwrap(), v6).unwrap_err();
            assert_eq!(e.to_string(), format!("{bad} cannot be a backend: link-local address (fe80::/10)"));
        }
        assert_eq!(check_backend_address("fec0::1".parse().unwrap(), v6), Ok(()), "just past fe80::/10");
    }

    #[test]
    fn ipv4_mapped_addresses_are_judged_as_ipv4_and_refused_as_written() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        for (bad, why) in [
            ("::ffff:127.0.0.1", Some("loopback address")),
            ("::ffff:0.0.0.0", Some("unspecified address")),
            ("::ffff:224.0.0.1", Some("multicast address")),
            ("::ffff:255.255.255.255", Some("broadcast address")),
            ("::ffff:169.254.0.9", Some("link-local address (169.254.0.0/16)")),
            ("::ffff:10.1.0.2", None),
        ] {
            let a: IpAddr = bad.parse().unwrap();
            for vip in [v4, v6] {
                assert_eq!(check_backend_address(a, vip), Err(RuleError::Mapped(a, why)), "{bad} for VIP {vip}");
            }
        }
        let e = check_backend_address("::ffff:127.0.0.1".parse().unwrap(), v6).unwrap_err();
        assert_eq!(
            e.to_string(),
            "::ffff:127.0.0.1 cannot be a backend: an IPv4-mapped IPv6 address of a loopback address"
        );
        let e = check_backend_address("::ffff:10.1.0.2".parse().unwrap(), v4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "::ffff:10.1.0.2 cannot be a backend: an IPv4-mapped IPv6 address: write the IPv4 address"
        );
    }

    #[test]
    fn weights_and_macs() {
        assert_eq!(check_weight(1), Ok(()));
        assert_eq!(check_weight(0), Err(RuleError::Weight(0)));
        assert_eq!(check_weight(65536), Err(RuleError::Weight(65536)));
        let m: Mac = "02:AB:cd-00:00:ff".parse().unwrap();
        assert_eq!(m, Mac([2, 0xab, 0xcd, 0, 0, 0xff]));
        assert_eq!(m.to_string(), "02:ab:cd:00:00:ff");
        assert!("02:ab:cd:00:00".parse::<Mac>().is_err());
        assert!("02:ab:cd:00:00:fg".parse::<Mac>().is_err());
    }
}
