//! The key layout under a fleet's prefix `P`:
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `P/nodes/<node>` | the node's name | the node's |
//! | `P/verdicts/<service>/<backend>/<node>` | `up` or `down` | the node's |
//! | `P/ops/<kind>/<service>/<backend>` | an operator change ([`super::ops`]) | none |
//! | `P/leader/...` | etcd's election keys | the candidates' |
//! | `P/restarts/<service>/<backend>` | the current restart attempt ([`super::restart`]) | none |
//! | `P/actions/scale/<service>`, `P/actions/replace/<service>/<backend>` | the last hook run ([`super::claim`]) | none |
//! | `P/config/...` | the fleet's config, versioned ([`super::config`]) | see there |
//!
//! Names are checked by [`crate::config::rules::check_name`]: no `/`.

use super::config::ConfigKey;

/// The keys of one fleet.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// A live node.
    Node(&'a str),
    /// One node's verdict on one backend.
    Verdict {
        /// The service.
        service: &'a str,
        /// The backend.
        backend: &'a str,
        /// The node that probed.
        node: &'a str,
    },
    /// An operator change, by its key relative to `P/ops/`.
    Op(&'a str),
    /// The fleet's config.
    Config(ConfigKey<'a>),
    /// Anything else (election, restart records).
    Other,
}

impl Keys {
    /// The keys under `prefix` (no trailing `/`).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    /// Everything of the fleet.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Node `node`'s liveness key.
    pub fn node(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.prefix)
    }

    /// `node`'s verdict on `service/backend`.
    pub fn verdict(&self, service: &str, backend: &str, node: &str) -> String {
        format!("{}/verdicts/{service}/{backend}/{node}", self.prefix)
    }

    /// An operator change, from its relative key.
    pub fn op(&self, rel: &str) -> String {
        format!("{}/ops/{rel}", self.prefix)
    }

    /// A key of the fleet's config.
    pub fn config(&self, k: &ConfigKey) -> String {
        format!("{}/config/{}", self.prefix, k.rel())
    }

    /// The election's name.
    pub fn election(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The restart record of `service/backend`.
    pub fn restart(&self, service: &str, backend: &str) -> String {
        format!("{}/restarts/{service}/{backend}", self.prefix)
    }

    /// The record of a one-per-fleet action (`scale/<service>`,
    /// `replace/<service>/<backend>`).
    pub fn action(&self, what: &str) -> String {
        format!("{}/actions/{what}", self.prefix)
    }

    /// What `key` is.
    pub fn parse<'a>(&self, key: &'a str) -> Key<'a> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_prefix('/')) else {
            return Key::Other;
        };
        let Some((kind, rest)) = rest.split_once('/') else { return Key::Other };
        match kind {
            "nodes" if !rest.contains('/') => Key::Node(rest),
            "verdicts" => {
                let mut p = rest.splitn(3, '/');
                match (p.next(), p.next(), p.next()) {
                    (Some(service), Some(backend), Some(node)) if !node.contains('/') => {
                        Key::Verdict { service, backend, node }
                    }
                    _ => Key::Other,
                }
            }
            "ops" => Key::Op(rest),
            "config" => ConfigKey::parse(rest).map_or(Key::Other, Key::Config),
            _ => Key::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let k = Keys::new("/veer");
        assert_eq!(k.parse(&k.node("lb1")), Key::Node("lb1"));
        assert_eq!(
            k.parse(&k.verdict("web", "b1", "lb2")),
            Key::Verdict { service: "web", backend: "b1", node: "lb2" }
        );
        assert_eq!(k.parse(&k.op("admin/web/b1")), Key::Op("admin/web/b1"));
        assert_eq!(k.parse(&k.restart("web", "b1")), Key::Other);
        assert_eq!(k.parse(&k.config(&ConfigKey::Running("lb1"))), Key::Config(ConfigKey::Running("lb1")));
        assert_eq!(k.parse("/veer2/nodes/x"), Key::Other, "another fleet's prefix");
        assert_eq!(k.parse("/veer/nodes/a/b"), Key::Other);
    }
}
