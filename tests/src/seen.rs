//! Reading the frames the XDP program sends: addresses, ports, the TCP
//! header's fields, and checksums recomputed from scratch (independent of
//! the program's incremental updates).

use std::net::{IpAddr, SocketAddr};

use veer_abi::csum::checksum;

/// What a frame carries, its checksums checked by a full recomputation.
#[derive(Debug)]
pub struct Seen {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Whether the IPv4 header's and the L4 checksums are right.
    pub checksums_ok: bool,
    /// The TCP header's fields (`None` for UDP, or a segment cut short).
    pub tcp: Option<TcpSeen>,
}

/// A TCP segment's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSeen {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// The flags byte (0x02 SYN, 0x10 ACK, 0x12 SYN-ACK, 0x04 RST, 0x01 FIN).
    pub flags: u8,
    /// Window (unscaled).
    pub window: u16,
    /// The options' bytes.
    pub options: Vec<u8>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl TcpSeen {
    /// The MSS option's value, if the options carry one.
    pub fn mss(&self) -> Option<u16> {
        let mut o = &self.options[..];
        while let [kind, rest @ ..] = o {
            match kind {
                0 => return None,
                1 => o = rest,
                _ => {
                    let len = *rest.first()? as usize;
                    if *kind == 2 && len == 4 {
                        return Some(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]));
                    }
                    o = o.get(len.max(2)..)?;
                }
            }
        }
        None
    }
}

/// Reads an Ethernet frame carrying IPv4 or IPv6 and TCP or UDP.
pub fn inspect(f: &[u8]) -> Seen {
    let v4 = f[12..14] == [0x08, 0x00];
    let (src, dst, proto, l4, l3_ok, pseudo) = if v4 {
        let ihl = (f[14] & 0x0f) as usize * 4;
        let hdr = &f[14..14 + ihl];
        let src = IpAddr::from(<[u8; 4]>::try_from(&f[26..30]).unwrap());
        let dst = IpAddr::from(<[u8; 4]>::try_from(&f[30..34]).unwrap());
        let len = f.len() - 14 - ihl;
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, f[23]]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        (src, dst, f[23], 14 + ihl, checksum(hdr) == 0, pseudo)
    } else {
        let src = IpAddr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
        let dst = IpAddr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
        let len = f.len() - 54;
        let mut pseudo = f[22..54].to_vec();
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, f[20]]);
        (src, dst, f[20], 54, true, pseudo)
    };
    let seg = &f[l4..];
    let l4_ok = {
        let mut all = pseudo.clone();
        all.extend_from_slice(seg);
        // UDP over IPv4 may carry no checksum.
        (proto == 17 && v4 && seg[6..8] == [0, 0]) || checksum(&all) == 0
    };
    // A quoted segment (in an ICMP error) may be cut short: no fields then.
    let tcp = (proto == 6 && seg.len() >= 20 && seg.len() >= (seg[12] >> 4) as usize * 4).then(|| {
        let doff = (seg[12] >> 4) as usize * 4;
        TcpSeen {
            seq: u32::from_be_bytes(seg[4..8].try_into().unwrap()),
            ack: u32::from_be_bytes(seg[8..12].try_into().unwrap()),
            flags: seg[13],
            window: u16::from_be_bytes([seg[14], seg[15]]),
            options: seg[20..doff].to_vec(),
            payload: seg[doff..].to_vec(),
        }
    });
    Seen {
        src: SocketAddr::new(src, u16::from_be_bytes([seg[0], seg[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([seg[2], seg[3]])),
        checksums_ok: l3_ok && l4_ok,
        tcp,
    }
}

/// A frame with valid checksums (the crafted frames carry a zero L4 checksum).
pub fn with_checksums(mut f: Vec<u8>) -> Vec<u8> {
    let v4 = f[12..14] == [0x08, 0x00];
    let (l4, proto) = if v4 { (14 + (f[14] & 0x0f) as usize * 4, f[23]) } else { (54, f[20]) };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let mut pseudo = if v4 {
        let mut p = f[26..34].to_vec();
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&((f.len() - l4) as u16).to_be_bytes());
        p
    } else {
        let mut p = f[22..54].to_vec();
        p.extend_from_slice(&((f.len() - l4) as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        p
    };
    pseudo.extend_from_slice(&f[l4..]);
    let mut c = checksum(&pseudo);
    if c == 0 && proto == 17 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f
}
