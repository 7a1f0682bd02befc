//! The host's users and groups, named in the config by name or number.

/// Resolves a group given by name or number.
pub fn group_id(group: &str) -> std::io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no group named {group:?}"))),
        Err(e) => Err(e.into()),
    }
}

/// Resolves a user given by name or number: its uid and primary gid.
pub fn user_ids(user: &str) -> std::io::Result<(u32, u32)> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    match found {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no user {user:?}"))),
        Err(e) => Err(e.into()),
    }
}

/// Whether this process holds capability `cap` in its effective set.
pub fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|bits| bits & (1 << cap) != 0)
    })
}

/// CAP_KILL.
pub const CAP_KILL: u32 = 5;
/// CAP_SETGID.
pub const CAP_SETGID: u32 = 6;
/// CAP_SETUID.
pub const CAP_SETUID: u32 = 7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_numbers_resolve_and_strangers_do_not() {
        assert_eq!(user_ids("root").unwrap(), (0, 0));
        assert_eq!(user_ids("0").unwrap(), (0, 0));
        assert_eq!(group_id("root").unwrap(), 0);
        assert_eq!(group_id("4242").unwrap(), 4242);
        assert!(user_ids("no-such-user-veer").is_err());
        assert!(group_id("no-such-group-veer").is_err());
    }
}
