//! Writing the backend table, and where packets toward backends leave by:
//! the TX ports a redirect may use and the NAT source addresses and ports.

use aya::maps::{Array, DevMapHash, MapData};
use veer_abi::{names, Backend, BackendState};

use super::{to_abi, Dataplane, DataplaneError, MapReader, Result};

impl Dataplane {
    /// Allows redirecting to interface `ifindex` (backends behind another NIC).
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        let mut m: DevMapHash<&mut MapData> = map_mut!(self, DevMapHash, names::TX_PORTS);
        let what = format!("adding ifindex {ifindex}");
        m.insert(ifindex, ifindex, None, 0).map_err(|e| match e {
            aya::maps::xdp::XdpMapError::MapError(e) => DataplaneError::map(names::TX_PORTS, what)(e),
            other => DataplaneError::Unsupported(format!("{what}: {other}")),
        })
    }

    /// Sets SNAT address `index` (what NAT uses as the source toward backends
    /// whose entry names that index).
    pub fn set_snat_addr(&mut self, index: u16, addr: std::net::IpAddr) -> Result<()> {
        let mut m: Array<&mut MapData, [u8; 16]> = map_mut!(self, Array, names::SNAT_ADDRS);
        m.set(index as u32, to_abi(addr), 0).map_err(DataplaneError::map(names::SNAT_ADDRS, format!("writing {index}")))
    }

    /// Sets the SNAT port range (`port_min` 0 turns NAT's return path off).
    /// `cfg.cpus` 0 is filled in with the possible CPUs.
    pub fn set_nat_config(&mut self, mut cfg: veer_abi::NatConfig) -> Result<()> {
        if cfg.cpus == 0 && cfg.port_min != 0 {
            cfg.cpus = super::possible_cpus()
                .map_err(|e| DataplaneError::Unsupported(format!("reading the possible CPUs: {e}")))?;
        }
        // NAT's answers come to SNAT addresses, which the VIP filter must not pass.
        self.await_answers()?;
        let mut m: Array<&mut MapData, veer_abi::NatConfig> = map_mut!(self, Array, names::NAT_CONFIG);
        m.set(0, cfg, 0).map_err(DataplaneError::map(names::NAT_CONFIG, "writing"))?;
        self.refresh_vip_filter()
    }

    /// Writes backend `id` whole.
    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<()> {
        if id >= self.max_backends {
            return Err(DataplaneError::IdOutOfRange { what: "backend", id, capacity: self.max_backends });
        }
        let mut m: Array<&mut MapData, Backend> = map_mut!(self, Array, names::BACKENDS);
        m.set(id, backend, 0).map_err(DataplaneError::map(names::BACKENDS, format!("writing backend {id}")))
    }

    /// Frees backend `id`: zeroed, it reads as down, and flows pinned to it move.
    pub fn clear_backend(&mut self, id: u32) -> Result<()> {
        let zero = Backend {
            addr: [0; 16],
            mac: [0; 6],
            src_mac: [0; 6],
            ifindex: 0,
            weight: 0,
            state: 0,
            service: 0,
            port: 0,
            snat: 0,
            snat_count: 0,
            encap: 0,
        };
        self.set_backend(id, &zero)
    }

    /// Flips backend `id`'s state word: the next packet sees it.
    pub fn set_backend_state(&mut self, id: u32, state: BackendState) -> Result<()> {
        let mut b = self.backend(id)?;
        b.state = state as u32;
        self.set_backend(id, &b)
    }
}
