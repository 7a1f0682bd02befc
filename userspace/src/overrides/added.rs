//! A backend added at runtime (`veerctl add-backend`, a replacement, or a
//! fleet peer through etcd): data only. It names a server and how to reach
//! it, never a command: the state file and etcd are data that anyone able
//! to write them could otherwise turn into root commands on the balancer.
//! Commands come only from the config file.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{
    rules::{self, RuleError},
    BackendConfig,
};

/// What the state file and etcd hold for a backend added at runtime.
/// Unknown fields (such as `restart` or `update`) are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct AddedBackend {
    /// Unique within its service.
    pub name: String,
    /// Address (health checks go here; the next hop is its MAC).
    pub address: IpAddr,
    /// Relative weight, 1 to 65535.
    #[serde(default = "one")]
    pub weight: u32,
    /// Takes traffic only while fewer than `min_healthy` primaries are up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
    /// Next-hop MAC; looked up in the neighbour table when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

fn one() -> u32 {
    1
}

/// An entry as stored. Files and etcd keys written before the narrow type
/// held whole backend configs: their `sorry`, `restart` and `update` are
/// accepted while empty, and refused with any value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    name: String,
    address: IpAddr,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    backup: bool,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    sorry: bool,
    #[serde(default)]
    restart: Option<serde_json::Value>,
    #[serde(default)]
    update: Vec<String>,
}

impl TryFrom<Stored> for AddedBackend {
    type Error = String;

    fn try_from(s: Stored) -> Result<Self, String> {
        if s.restart.is_some() {
            return Err(format!(
                "backend {:?}: a `restart` command is not data; commands come only from the config file",
                s.name
            ));
        }
        if !s.update.is_empty() {
            return Err(format!(
                "backend {:?}: an `update` command is not data; commands come only from the config file",
                s.name
            ));
        }
        if s.sorry {
            return Err(format!("backend {:?}: a sorry backend comes only from the config file", s.name));
        }
        Ok(Self { name: s.name, address: s.address, weight: s.weight, backup: s.backup, mac: s.mac })
    }
}

impl AddedBackend {
    /// Checks every field against the rules the config file obeys, for a
    /// service on `vip` (`tunnelled`: its backends may be of either family).
    pub fn check(&self, vip: IpAddr, tunnelled: bool) -> Result<(), RuleError> {
        rules::check_name(&self.name)?;
        rules::check_backend_address_for(self.address, vip, tunnelled)?;
        rules::check_weight(self.weight)?;
        if let Some(m) = &self.mac {
            m.parse::<rules::Mac>()?;
        }
        Ok(())
    }

    /// The backend as the running config holds it: no restart command, no
    /// update command of its own (the service's `update` applies).
    pub fn to_config(&self) -> BackendConfig {
        BackendConfig::runtime(self.name.clone(), self.address, self.weight, self.mac.clone(), self.backup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_in_an_added_backend_is_refused() {
        let planted = r#"{"name":"b9","address":"10.0.0.9","weight":1,
            "restart":{"command":["/bin/sh","-c","id > /tmp/x"]}}"#;
        let e = serde_json::from_str::<AddedBackend>(planted).unwrap_err().to_string();
        assert!(e.contains("`restart` command is not data"), "{e}");
        let e = serde_json::from_str::<AddedBackend>(r#"{"name":"b9","address":"10.0.0.9","update":["x"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`update` command is not data"), "{e}");
        let e = serde_json::from_str::<AddedBackend>(r#"{"name":"b9","address":"10.0.0.9","shell":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `shell`"), "{e}");
    }

    #[test]
    fn entries_written_by_the_previous_version_still_load() {
        let old = r#"{"name":"b9","address":"10.0.0.9","weight":2,"backup":false,"sorry":false,
            "mac":null,"restart":null,"update":[]}"#;
        let b: AddedBackend = serde_json::from_str(old).unwrap();
        assert_eq!(b.weight, 2);
        assert_eq!(b.name, "b9");
    }

    #[test]
    fn fields_obey_the_config_rules() {
        let vip: IpAddr = "10.0.0.1".parse().unwrap();
        let ok: AddedBackend = serde_json::from_str(r#"{"name":"b9","address":"10.0.0.9"}"#).unwrap();
        assert_eq!(ok.weight, 1);
        assert_eq!(ok.check(vip, false), Ok(()));
        let with = |f: &dyn Fn(&mut AddedBackend)| {
            let mut b = ok.clone();
            f(&mut b);
            b.check(vip, false)
        };
        assert!(with(&|b| b.name = "-x".into()).is_err());
        assert!(with(&|b| b.name = "a/b".into()).is_err());
        assert!(with(&|b| b.weight = 0).is_err());
        assert!(with(&|b| b.mac = Some("nope".into())).is_err());
        assert!(with(&|b| b.address = "127.0.0.1".parse().unwrap()).is_err());
        assert!(with(&|b| b.address = "fd00::9".parse().unwrap()).is_err());
        let cfg = ok.to_config();
        assert!(cfg.restart.is_none() && cfg.update.is_empty());
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"name":"b9","address":"10.0.0.9","weight":1}"#);
    }
}
