//! The NAT sync message: NAT flows, each with what another node needs to
//! carry it on, behind a header and before an HMAC-SHA256 of the whole
//! under the fleet's key. Little-endian, fixed sizes:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `VNS1` |
//! | 8 | sent at, ms since the Unix epoch (a message older than [`MAX_AGE_MS`] is refused) |
//! | 2 | flow count |
//! | [`FLOW_BYTES`] each | the flows ([`NatFlow`]) |
//! | 32 | HMAC-SHA256 of everything before it |

use ring::hmac;
use veer_abi::{FlowKey, NatMapping};

use crate::dataplane::nat_sync::NatFlow;

const MAGIC: &[u8; 4] = b"VNS1";
const HEADER: usize = 4 + 8 + 2;
const TAG: usize = 32;
/// Bytes of one flow.
pub const FLOW_BYTES: usize = 40 + 16 + 2 + 16 + 2 + 4 + 4 + 4 + 28;
/// Flows in one message (it fits a 1,500-byte MTU with IPv6 and UDP).
pub const FLOWS_PER_MESSAGE: usize = (1400 - HEADER - TAG) / FLOW_BYTES;
/// A message older (or newer) than this is refused: a replay.
pub const MAX_AGE_MS: u64 = 30_000;

/// Why a message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Too short, a wrong magic, or a count that does not match its length.
    #[error("malformed NAT sync message")]
    Malformed,
    /// Its HMAC does not check out under this node's key.
    #[error("NAT sync message with a bad HMAC (another key, or forged)")]
    BadTag,
    /// Sent too long ago (or in the future).
    #[error("NAT sync message {0} ms away from now: refused as a replay")]
    Stale(u64),
}

/// The messages carrying `flows`, signed with `key`, sent at `now_ms`.
pub fn encode(flows: &[NatFlow], key: &hmac::Key, now_ms: u64) -> Vec<Vec<u8>> {
    flows
        .chunks(FLOWS_PER_MESSAGE)
        .map(|chunk| {
            let mut m = Vec::with_capacity(HEADER + chunk.len() * FLOW_BYTES + TAG);
            m.extend_from_slice(MAGIC);
            m.extend_from_slice(&now_ms.to_le_bytes());
            m.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            for f in chunk {
                put_flow(&mut m, f);
            }
            let tag = hmac::sign(key, &m);
            m.extend_from_slice(tag.as_ref());
            m
        })
        .collect()
}

/// The flows of message `m`, if its HMAC under `key` checks out and it was
/// sent within [`MAX_AGE_MS`] of `now_ms`.
pub fn decode(m: &[u8], key: &hmac::Key, now_ms: u64) -> Result<Vec<NatFlow>, WireError> {
    if m.len() < HEADER + TAG || &m[..4] != MAGIC {
        return Err(WireError::Malformed);
    }
    let (body, tag) = m.split_at(m.len() - TAG);
    hmac::verify(key, body, tag).map_err(|_| WireError::BadTag)?;
    let sent = u64::from_le_bytes(body[4..12].try_into().map_err(|_| WireError::Malformed)?);
    let age = now_ms.abs_diff(sent);
    if age > MAX_AGE_MS {
        return Err(WireError::Stale(age));
    }
    let n = u16::from_le_bytes([body[12], body[13]]) as usize;
    let flows = &body[HEADER..];
    if flows.len() != n * FLOW_BYTES {
        return Err(WireError::Malformed);
    }
    Ok(flows.chunks_exact(FLOW_BYTES).map(get_flow).collect())
}

fn put_flow(m: &mut Vec<u8>, f: &NatFlow) {
    let k = &f.key;
    m.extend_from_slice(&k.src);
    m.extend_from_slice(&k.dst);
    m.extend_from_slice(&k.sport.to_le_bytes());
    m.extend_from_slice(&k.dport.to_le_bytes());
    m.extend_from_slice(&[k.proto, 0, 0, 0]);
    m.extend_from_slice(&f.backend);
    m.extend_from_slice(&f.backend_port.to_le_bytes());
    m.extend_from_slice(&f.snat);
    m.extend_from_slice(&f.snat_port.to_le_bytes());
    m.extend_from_slice(&f.conn_flags.to_le_bytes());
    m.extend_from_slice(&f.ts_off.to_le_bytes());
    m.extend_from_slice(&f.idle_ms.to_le_bytes());
    let x = &f.mapping;
    for v in [x.seq_delta, x.flags, x.backend_isn, x.cookie, x.client_isn] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(&x.client_mss.to_le_bytes());
    m.extend_from_slice(&x.client_window.to_le_bytes());
    m.extend_from_slice(&x.ts_off.to_le_bytes());
}

/// Reads fixed-size fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let n = N.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.try_into().unwrap_or([0; N])
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
}

/// One flow of [`FLOW_BYTES`] (the caller gives exactly that many).
fn get_flow(b: &[u8]) -> NatFlow {
    let mut r = Reader(b);
    let (src, dst) = (r.take::<16>(), r.take::<16>());
    let (sport, dport) = (r.u16(), r.u16());
    let proto = r.take::<4>()[0];
    let key = FlowKey { src, dst, sport, dport, proto, _pad: [0; 3] };
    let (backend, backend_port, snat, snat_port) = (r.take::<16>(), r.u16(), r.take::<16>(), r.u16());
    let (conn_flags, ts_off, idle_ms) = (r.u32(), r.u32(), r.u32());
    let mut mapping = NatMapping::new(key, 0, 0);
    mapping.seq_delta = r.u32();
    mapping.flags = r.u32();
    mapping.backend_isn = r.u32();
    mapping.cookie = r.u32();
    mapping.client_isn = r.u32();
    mapping.client_mss = r.u16();
    mapping.client_window = r.u16();
    mapping.ts_off = r.u32();
    NatFlow { key, backend, backend_port, snat, snat_port, conn_flags, ts_off, idle_ms, mapping }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u8) -> NatFlow {
        let key = FlowKey { src: [n; 16], dst: [2; 16], sport: 40000 + n as u16, dport: 80, proto: 6, _pad: [0; 3] };
        let mut mapping = NatMapping::new(key, 0, 0);
        (mapping.seq_delta, mapping.flags, mapping.backend_isn, mapping.ts_off) = (7, 0x31, 12345, 99);
        (mapping.client_mss, mapping.client_window) = (1460, 64240);
        NatFlow {
            key,
            backend: [10; 16],
            backend_port: 8080,
            snat: [66; 16],
            snat_port: 20000 + n as u16,
            conn_flags: 1 << 20,
            ts_off: 99,
            idle_ms: 1234,
            mapping,
        }
    }

    #[test]
    fn flows_round_trip_and_forgeries_replays_and_garbage_are_refused() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"a fleet's shared key");
        let flows: Vec<NatFlow> = (0..FLOWS_PER_MESSAGE as u8 + 3).map(flow).collect();
        let now = 1_800_000_000_000;
        let msgs = encode(&flows, &key, now);
        assert_eq!(msgs.len(), 2);
        assert!(msgs.iter().all(|m| m.len() <= 1400));
        let back: Vec<NatFlow> = msgs.iter().flat_map(|m| decode(m, &key, now + 5).unwrap()).collect();
        assert_eq!(back, flows);

        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another fleet's key");
        assert_eq!(decode(&msgs[0], &other, now), Err(WireError::BadTag));
        let mut forged = msgs[0].clone();
        forged[HEADER + 3] ^= 1;
        assert_eq!(decode(&forged, &key, now), Err(WireError::BadTag));
        assert_eq!(decode(&msgs[0], &key, now + MAX_AGE_MS + 1), Err(WireError::Stale(MAX_AGE_MS + 1)));
        assert_eq!(decode(b"VNS1", &key, now), Err(WireError::Malformed));
        assert_eq!(decode(&[0u8; 64], &key, now), Err(WireError::Malformed));
    }
}
