//! The balancer's tunnel ends (IPIP, GUE): where a tunnelled backend's
//! agent sends a packet back.

use aya::maps::{Array, HashMap, MapData};
use veer_abi::{names, TunnelConfig};

use super::{to_abi, Dataplane, DataplaneError, Result};

impl Dataplane {
    /// Makes `addr` one of the balancer's tunnel sources (`on`), or no
    /// longer one: a tunnel packet to it is taken out of its tunnel.
    pub fn set_tunnel_source(&mut self, addr: std::net::IpAddr, on: bool) -> Result<()> {
        let mut m: HashMap<&mut MapData, [u8; 16], u32> = map_mut!(self, HashMap, names::TUNNEL_SOURCES);
        let key = to_abi(addr);
        let r = if on { m.insert(key, 1, 0) } else { m.remove(&key) };
        match r {
            Err(aya::maps::MapError::KeyNotFound) if !on => Ok(()),
            r => r.map_err(DataplaneError::map(names::TUNNEL_SOURCES, format!("writing {addr}"))),
        }
    }

    /// Sets the tunnels' settings: the GUE port bounces arrive on (0: none)
    /// and the tunnel MACs' key.
    pub fn set_tunnel_config(&mut self, cfg: TunnelConfig) -> Result<()> {
        // GUE comes back to the balancer's own address, which the VIP filter must not pass.
        self.await_answers()?;
        let mut m: Array<&mut MapData, TunnelConfig> = map_mut!(self, Array, names::TUNNEL_CONFIG);
        m.set(0, cfg, 0).map_err(DataplaneError::map(names::TUNNEL_CONFIG, "writing"))?;
        self.refresh_vip_filter()
    }

    /// The tunnels' settings as the dataplane holds them (adopted pins keep
    /// their key).
    pub fn tunnel_config(&self) -> Result<TunnelConfig> {
        let map = self.ebpf.map(names::TUNNEL_CONFIG);
        let map = map.ok_or(DataplaneError::Missing { kind: "map", name: names::TUNNEL_CONFIG })?;
        let m: Array<&MapData, TunnelConfig> =
            Array::try_from(map).map_err(DataplaneError::map(names::TUNNEL_CONFIG, "opening"))?;
        m.get(&0, 0).map_err(DataplaneError::map(names::TUNNEL_CONFIG, "reading"))
    }
}
