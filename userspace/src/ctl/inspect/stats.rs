//! `veerctl stats` and `veerctl diff`.

use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};
use veer_abi::GlobalCounter;

use super::row::{table, Row};
use crate::{ctl::Ctx, dataplane::MapReader};

/// One global counter.
#[derive(Debug, Serialize)]
pub struct CounterRow {
    counter: &'static str,
    packets: u64,
    meaning: &'static str,
}

impl Row for CounterRow {
    const HEAD: &'static [&'static str] = &["COUNTER", "PACKETS", "MEANING"];
    fn cells(&self) -> Vec<String> {
        vec![self.counter.into(), self.packets.to_string(), self.meaning.into()]
    }
}

/// What each global counter counts, as `veerctl stats` prints it.
const MEANINGS: &[(GlobalCounter, &str)] = &[
    (GlobalCounter::Passed, "not for a service: to the kernel"),
    (GlobalCounter::Transmitted, "forwarded back out (XDP_TX)"),
    (GlobalCounter::Redirected, "forwarded to another interface"),
    (GlobalCounter::DropTruncated, "dropped: header cut short"),
    (GlobalCounter::DropMalformed, "dropped: invalid header"),
    (GlobalCounter::DropFragment, "dropped: IP fragment for a VIP"),
    (GlobalCounter::DropIpv6ExtHeader, "dropped: IPv6 extension header"),
    (GlobalCounter::DropNoBackend, "dropped: no backend up (fallback drop)"),
    (GlobalCounter::DropBadBackend, "dropped: unusable backend entry"),
    (GlobalCounter::DropRedirect, "dropped: egress not in the devmap"),
    (GlobalCounter::FallbackPassed, "no backend up: passed to the kernel"),
    (GlobalCounter::FallbackBackend, "no backend up: sent to the sorry backend"),
    (GlobalCounter::ConnInserted, "flows entered the connection table (2nd packet)"),
    (GlobalCounter::ConnReused, "table entries replaced by a SYN on their 5-tuple"),
    (GlobalCounter::ConnInsertFailed, "table inserts the kernel refused"),
    (GlobalCounter::NewFlowInserted, "flows entered the new-flow table (1st packet)"),
    (GlobalCounter::ConnLost, "TCP packets whose flow had lost its entry"),
    (GlobalCounter::IcmpToBackend, "ICMP errors sent on to the flow's backend"),
    (GlobalCounter::DropIcmpNoFlow, "dropped: ICMP error for no known flow"),
    (GlobalCounter::NatMapped, "NAT flows given a SNAT port"),
    (GlobalCounter::DropNatExhausted, "dropped: new NAT flow, no free SNAT port"),
    (GlobalCounter::NatReturned, "backend answers translated back to clients"),
    (GlobalCounter::NatReturnMiss, "packets to a SNAT port with no mapping (passed)"),
    (GlobalCounter::DropNoNeighbour, "dropped: NAT next hop not resolved yet"),
    (GlobalCounter::DropNoRoute, "dropped: no route for a NAT packet"),
    (GlobalCounter::DropTailCall, "dropped: a continuation program was missing"),
    (GlobalCounter::PassiveSynRetransmit, "SYNs retransmitted to a silent backend (passive signal)"),
    (GlobalCounter::PassiveRefused, "SYNs a NAT backend refused with RST (RST withheld)"),
    (GlobalCounter::Redispatched, "connections moved to another backend before establishing"),
    (GlobalCounter::PassiveBounced, "SYNs a DSR backend's agent sent back (nothing listens)"),
    (GlobalCounter::DropBounced, "dropped: a SYN bounced a second time"),
    (GlobalCounter::PassiveUnreachable, "UDP port unreachables from a NAT backend (withheld; flow moves)"),
    (GlobalCounter::NatIcmpToClient, "ICMP errors about NAT packets translated on to the client"),
    (GlobalCounter::SynCookiesSent, "NAT SYNs answered with a SYN cookie"),
    (GlobalCounter::SynCookiesValid, "NAT handshakes completed with a valid cookie"),
    (GlobalCounter::DropBadCookie, "NAT packet for no flow, no valid cookie (RST, or dropped in a flood)"),
    (GlobalCounter::SynProxySpliced, "NAT connections veer opened, spliced to the client"),
    (GlobalCounter::DropProxyWaiting, "dropped: client packet while veer opens its connection"),
    (GlobalCounter::DropTtlExpired, "dropped: NAT packet whose TTL ran out"),
    (GlobalCounter::NatUnprovenAck, "NAT packet not acknowledging the backend's SYN-ACK: not promoted"),
    (GlobalCounter::SecondChance, "DSR packets a ring change lost, bounced to the previous ring's backend"),
    (GlobalCounter::DropSecondChance, "dropped: DSR packet bounced with nowhere else to go"),
    (GlobalCounter::SynOnLive, "SYNs on a live connection's 5-tuple, sent to its backend (entry kept)"),
    (GlobalCounter::ProxySynResent, "SYNs veer's proxy resent to a backend that had not answered"),
    (GlobalCounter::DropForeignSynAck, "dropped: SYN-ACK not acknowledging veer's proxied SYN"),
    (GlobalCounter::NatTakenOver, "NAT flows given the SNAT port of a closed flow (timestamps on)"),
    (GlobalCounter::SynRescued, "NAT SYNs resent elsewhere after no answer (host cut off)"),
    (GlobalCounter::DropStaleRescue, "dropped: a rescue of a SYN answered meanwhile"),
    (GlobalCounter::Encapsulated, "packets sent to their backend through IPIP or GUE"),
    (GlobalCounter::TooBigAnswered, "too big for the tunnel: ICMP fragmentation needed / too big sent"),
    (GlobalCounter::DropTooBig, "dropped: too big for the tunnel, IPv4 without Don't Fragment"),
    (GlobalCounter::Decapsulated, "packets a backend's agent bounced back through its tunnel"),
    (GlobalCounter::QuicRouted, "QUIC packets sent to the backend their connection ID names"),
    (GlobalCounter::DropNotABounce, "dropped: out of a tunnel to the balancer, not an agent's bounce"),
    (GlobalCounter::NatSyncLost, "NAT flows the fleet was not told of (veerd fell behind)"),
    (GlobalCounter::NatAnswerMoved, "NAT SYN-ACKs of flows a rescue had moved: to the kernel"),
];

fn meaning(c: GlobalCounter) -> &'static str {
    MEANINGS.iter().find(|(k, _)| *k == c).map_or("", |(_, m)| m)
}

/// `veerctl diff`: where the running state differs from the config file.
pub fn diff(ctx: &Ctx) -> Result<()> {
    let o = &ctx.overrides;
    let doc = serde_json::to_value(o)?;
    ctx.emit(&doc, || {
        if o.is_empty() {
            return format!("the running state matches {}\n", ctx.config_path.display());
        }
        let mut s = format!("runtime changes on top of {}:\n", ctx.config_path.display());
        for (k, a) in &o.admin {
            s += &format!("  {k}: {}\n", a.name());
        }
        for (k, w) in &o.weight {
            s += &format!("  {k}: weight {w}\n");
        }
        for (svc, v) in &o.added {
            for b in v {
                s += &format!("  {svc}/{}: added ({}, weight {})\n", b.name, b.address, b.weight);
            }
        }
        for k in &o.removed {
            s += &format!("  {k}: removed\n");
        }
        s
    });
    Ok(())
}

/// `veerctl stats`.
pub fn stats(ctx: &Ctx) -> Result<()> {
    let pins = ctx.pins()?;
    let g = pins.global_counters()?;
    let u = pins.table_usage()?;
    let mut doc: serde_json::Map<String, Value> = g.iter().map(|(c, v)| (c.name().to_string(), json!(v))).collect();
    doc.insert("tables".into(), serde_json::to_value(u)?);
    let rows: Vec<CounterRow> =
        g.iter().map(|(c, v)| CounterRow { counter: c.name(), packets: *v, meaning: meaning(*c) }).collect();
    ctx.emit(&Value::Object(doc), || {
        let cpus = u.possible_cpus.max(1);
        format!(
            "{}\nconnection table: IPv4 {} and IPv6 {} of {} entries each ({} per CPU LRU list, {} possible CPUs), \
             {} evicted\n\
             new-flow table:   IPv4 {} and IPv6 {} of {} entries each ({} per CPU LRU list)\n\
             NAT mappings:     {} of {}\n",
            table(&rows),
            u.conns_v4,
            u.conns_v6,
            u.conns_capacity,
            u.conns_capacity / cpus,
            cpus,
            u.conns_evicted,
            u.new_flows_v4,
            u.new_flows_v6,
            u.new_flows_capacity,
            u.new_flows_capacity / cpus,
            u.nat_mappings,
            u.nat_capacity,
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_one_meaning() {
        for c in GlobalCounter::ALL {
            assert_eq!(MEANINGS.iter().filter(|(k, _)| *k == c).count(), 1, "{}", c.name());
        }
        assert_eq!(MEANINGS.len(), GlobalCounter::ALL.len());
    }
}
