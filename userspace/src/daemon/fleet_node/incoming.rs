//! The fleet's operator changes as this node takes them: every entry is
//! checked (read, then held to the config's rules) before anything is
//! compared or merged. An entry that fails is left out whole, never applied
//! in part, and said once, not at every look at the fleet's view.

use std::collections::{BTreeMap, BTreeSet};

use crate::{config::Config, fleet::ops, overrides::Overrides};

/// The fleet's entries checked, and those already said to be invalid.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Why each entry currently left out is (said once each).
    warned: BTreeSet<String>,
}

/// What the fleet's entries hold once checked.
#[derive(Debug, Default, PartialEq)]
pub struct Checked {
    /// The entries that hold, as overrides.
    pub overrides: Overrides,
    /// Entries left out that were not already said: say each once.
    pub new_invalid: Vec<String>,
}

impl Incoming {
    /// The entries of `kvs` (relative keys) that hold against `file`'s
    /// rules; those that do not are left out, and named in `new_invalid`
    /// the first time they are seen (again after they went away).
    pub fn check(&mut self, kvs: &BTreeMap<String, String>, file: &Config) -> Checked {
        let (mut overrides, mut invalid) = ops::from_kvs(kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        invalid.extend(overrides.drop_invalid_added(file));
        let new_invalid = invalid.iter().filter(|why| !self.warned.contains(*why)).cloned().collect();
        self.warned = invalid.into_iter().collect();
        Checked { overrides, new_invalid }
    }

    /// The overrides the fleet wants of this node (the valid entries of
    /// `kvs`, this node's own drain kept), if they differ from `current`.
    pub fn wanted(
        &mut self,
        kvs: &BTreeMap<String, String>,
        current: &Overrides,
        file: &Config,
    ) -> (Option<Overrides>, Vec<String>) {
        let Checked { overrides: mut wanted, new_invalid } = self.check(kvs, file);
        wanted.node_drained = current.node_drained;
        let differs = ops::to_kvs(&wanted) != ops::to_kvs(current);
        (differs.then_some(wanted), new_invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overrides::{key, Admin};

    fn file() -> Config {
        let src = "[daemon]\ninterfaces = [\"eth0\"]\n\n[[service]]\nname = \"web\"\nvip = \"10.0.0.1\"\nport = 80\n\n\
                   [[service.backend]]\nname = \"b1\"\naddress = \"10.0.0.11\"\n";
        crate::config::parse(src, std::path::Path::new("t.toml")).expect("a valid config")
    }

    fn kvs(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const BAD_ADDED: (&str, &str) = ("added/web/b9", r#"{"name":"b9","address":"127.0.0.1"}"#);
    const BAD_WEIGHT: (&str, &str) = ("weight/web/b1", "0");
    const DRAIN: (&str, &str) = ("admin/web/b1", "draining");

    #[test]
    fn an_invalid_entry_is_left_out_whole_and_the_rest_applies() {
        let mut incoming = Incoming::default();
        let (wanted, invalid) = incoming.wanted(&kvs(&[DRAIN, BAD_ADDED, BAD_WEIGHT]), &Overrides::default(), &file());
        let wanted = wanted.expect("the drain is wanted");
        assert_eq!(wanted.admin.get(&key("web", "b1")), Some(&Admin::Draining));
        assert!(wanted.added.is_empty(), "a loopback backend is not added: {wanted:?}");
        assert!(wanted.weight.is_empty(), "{wanted:?}");
        assert_eq!(invalid.len(), 2, "{invalid:?}");
        assert!(invalid.iter().any(|w| w.contains("b9") && w.contains("loopback")), "{invalid:?}");
    }

    #[test]
    fn an_invalid_entry_is_said_once_and_does_not_make_the_fleet_differ() {
        let mut incoming = Incoming::default();
        let fleet = kvs(&[DRAIN, BAD_ADDED]);
        let (wanted, invalid) = incoming.wanted(&fleet, &Overrides::default(), &file());
        assert_eq!(invalid.len(), 1, "{invalid:?}");
        let applied = wanted.expect("the drain is wanted");
        // The next looks at the same view: nothing to apply, nothing to say.
        for _ in 0..3 {
            assert_eq!(incoming.wanted(&fleet, &applied, &file()), (None, Vec::new()));
        }
        // Gone, then back: said again.
        assert_eq!(incoming.wanted(&kvs(&[DRAIN]), &applied, &file()), (None, Vec::new()));
        let (_, invalid) = incoming.wanted(&fleet, &applied, &file());
        assert_eq!(invalid.len(), 1, "{invalid:?}");
    }
}
