//! `[daemon]`: instance-wide settings (pins, interfaces, map capacities, API).

use std::path::PathBuf;

use serde::Deserialize;

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Instance name: pins live in `<bpffs>/veer/<name>/`, the API socket is
    /// `/run/veer/<name>.sock` unless set.
    pub name: String,
    /// Where bpffs is (or gets) mounted.
    pub bpffs: PathBuf,
    /// Interfaces the XDP program is attached to.
    pub interfaces: Vec<String>,
    /// `driver` (native XDP) or `skb` (generic).
    pub attach_mode: AttachModeConfig,
    /// The API's Unix socket.
    pub api_socket: Option<PathBuf>,
    /// Connection-table entries, per address family: IPv4 and IPv6 flows
    /// have a table of this size each (the kernel rounds it up to a
    /// multiple of the possible CPUs: each CPU's LRU list gets an equal
    /// share).
    pub conn_table_size: u32,
    /// New-flow table entries, per address family: flows seen once (a SYN)
    /// wait here until their next packet, so a SYN flood cannot evict
    /// established flows.
    pub new_flow_table_size: u32,
    /// Service capacity of the maps.
    pub max_services: u32,
    /// Backend capacity of the maps (all services together). Freed ids are
    /// held back a while before reuse, so leave some room for churn.
    pub max_backends: u32,
    /// NAT flows the return table holds (NAT services only); a full table
    /// refuses new NAT flows.
    pub nat_table_size: u32,
    /// SNAT ports, `"LOW-HIGH"`: keep it clear of the kernel's
    /// `ip_local_port_range`, whose ports veerd's own health checks use.
    pub snat_ports: PortRange,
    /// SYN cookies for NAT services: `"auto"` answers a CPU's SYNs with
    /// cookies while it opens more than `syn_cookie_threshold` new NAT
    /// connections a second (and for 10 s after), so a flood of spoofed SYNs
    /// takes no SNAT port; `"always"`; or `"off"`.
    pub syn_cookies: SynCookies,
    /// New NAT connections per CPU per second before `"auto"` turns cookies on.
    pub syn_cookie_threshold: u32,
    /// Half-open NAT connections (client handshake not completed) past
    /// which `"auto"` turns cookies on for every CPU: a flood too slow for
    /// the rate threshold that would still fill the SNAT ports. Checked
    /// every 5 s.
    pub syn_cookie_half_open: u32,
    /// Resending a NAT SYN its backend leaves unanswered (a host cut off
    /// sends no refusal) to another backend, before the client's own
    /// retransmission: `"auto"` after four times the backend's measured
    /// SYN to SYN-ACK time, at least 20 ms; a duration; or `"off"`. For
    /// services with `passive = true` (the default).
    pub syn_rescue: SynRescue,
    /// Group (name or gid) whose members may connect to the API socket and
    /// read (status, events, metrics). Root and veerd's own user may always
    /// connect, and change things.
    pub api_group: Option<String>,
    /// Group (name or gid) whose members may also change things through the
    /// API (drain, weight, add or remove backends, reload). To connect they
    /// need the socket: the socket belongs to `api_group` when that is set
    /// (make them members of both), else to this group.
    pub api_admin_group: Option<String>,
    /// User (name or uid) that the commands veerd runs (exec checks,
    /// restart, replace and scale hooks) run as; never root (uid 0). veerd
    /// needs CAP_SETUID and CAP_SETGID for it. Unset: veerd's own user.
    /// Either way a command holds no capability and runs with
    /// `no_new_privs`.
    pub hook_user: Option<String>,
    /// Group (name or gid) of those commands, never root (gid 0); default:
    /// `hook_user`'s own.
    pub hook_group: Option<String>,
    /// Address of the Prometheus endpoint (`GET /metrics`); off when unset.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where runtime changes (drain, weight, added backends...) are kept so
    /// they survive a restart of veerd or of the host. Default
    /// `/var/lib/veer/<name>.runtime.json` (the unit's state directory).
    pub state_file: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            bpffs: "/sys/fs/bpf".into(),
            interfaces: Vec::new(),
            attach_mode: AttachModeConfig::Driver,
            api_socket: None,
            conn_table_size: veer_abi::DEFAULT_CONN_TABLE_SIZE,
            new_flow_table_size: veer_abi::DEFAULT_NEW_FLOW_TABLE_SIZE,
            max_services: veer_abi::MAX_SERVICES,
            max_backends: veer_abi::MAX_BACKENDS,
            nat_table_size: veer_abi::DEFAULT_NAT_TABLE_SIZE,
            snat_ports: PortRange { low: 10_000, high: 29_999 },
            syn_cookies: SynCookies::Auto,
            syn_cookie_threshold: 1000,
            syn_cookie_half_open: 4096,
            syn_rescue: SynRescue::Auto,
            api_group: None,
            api_admin_group: None,
            hook_user: None,
            hook_group: None,
            metrics: None,
            state_file: None,
        }
    }
}

impl DaemonConfig {
    /// Who commands run as: `hook_user` and `hook_group` resolved on this host.
    pub fn hook_identity(&self) -> std::io::Result<crate::runner::Identity> {
        let user = self.hook_user.as_deref().map(crate::account::user_ids).transpose()?;
        let gid = match self.hook_group.as_deref() {
            Some(g) => Some(crate::account::group_id(g)?),
            None => user.map(|(_, gid)| gid),
        };
        Ok(crate::runner::Identity { uid: user.map(|(uid, _)| uid), gid })
    }

    /// Directory of this instance's pins (versioned by the map layout).
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("veer").join(&self.name).join(format!("v{}", veer_abi::ABI_VERSION))
    }

    /// The API socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.api_socket.clone().unwrap_or_else(|| PathBuf::from(format!("/run/veer/{}.sock", self.name)))
    }

    /// The instance lock (beside the API socket): one veerd per instance.
    pub fn lock_path(&self) -> PathBuf {
        self.socket_path().with_extension("lock")
    }

    /// The runtime-state file.
    pub fn state_path(&self) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| PathBuf::from(format!("/var/lib/veer/{}.runtime.json", self.name)))
    }
}

/// When NAT services answer SYNs with SYN cookies (`syn_cookies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynCookies {
    /// Never: every SYN takes a SNAT port at once.
    Off,
    /// While a CPU sees more new connections than the threshold.
    Auto,
    /// Always (no window scaling, SACK or timestamps for NAT connections).
    Always,
}

impl SynCookies {
    /// The dataplane's `SYN_COOKIES_*` value.
    pub fn abi(self) -> u32 {
        match self {
            Self::Off => veer_abi::SYN_COOKIES_OFF,
            Self::Auto => veer_abi::SYN_COOKIES_AUTO,
            Self::Always => veer_abi::SYN_COOKIES_ALWAYS,
        }
    }
}

/// When veerd resends a NAT SYN left unanswered (`syn_rescue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynRescue {
    /// Never: the client's retransmission (after 1 s) finds the next backend.
    Off,
    /// After four times the backend's measured SYN to SYN-ACK time, at
    /// least [`SynRescue::FLOOR`].
    Auto,
    /// After this long.
    After(std::time::Duration),
}

impl SynRescue {
    /// The least `"auto"` waits: a LAN answers in well under a millisecond,
    /// but a busy backend's accept queue or a scheduling hiccup should not
    /// move its connections.
    pub const FLOOR: std::time::Duration = std::time::Duration::from_millis(20);
}

impl<'de> Deserialize<'de> for SynRescue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            _ => match humantime::parse_duration(&s) {
                Ok(t) if !t.is_zero() => Ok(Self::After(t)),
                _ => Err(serde::de::Error::custom(format!(
                    "{s:?}: expected \"auto\", \"off\" or a duration such as \"50ms\""
                ))),
            },
        }
    }
}

/// A port range, written `"LOW-HIGH"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub low: u16,
    /// Highest port.
    pub high: u16,
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("{s:?}: expected \"LOW-HIGH\" ports, e.g. \"10000-29999\""));
        let (l, h) = s.split_once('-').ok_or_else(bad)?;
        let low: u16 = l.trim().parse().map_err(|_| bad())?;
        let high: u16 = h.trim().parse().map_err(|_| bad())?;
        if low == 0 || high < low {
            return Err(bad());
        }
        Ok(Self { low, high })
    }
}

/// XDP attach mode as configured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachModeConfig {
    /// Native XDP.
    Driver,
    /// Generic XDP.
    Skb,
}
