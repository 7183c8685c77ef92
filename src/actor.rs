//! Who is acting: the operating-system account, as the system knows it.
//!
//! Purges, overrides and acceptances record who did them. The account comes from the password
//! database for the process's real user id, not from `USER` or `LOGNAME`, which a caller sets
//! at will and which are often unset under cron, systemd and container entrypoints.

/// The OS account running this process: its name from the password database, else `uid:N`.
pub fn os_user() -> String {
    match whoami::username() {
        Ok(name) if !name.is_empty() => name,
        _ => format!("uid:{}", uid()),
    }
}

/// `user@host`: the OS account and this machine's host name.
pub fn actor() -> String {
    format!("{}@{}", os_user(), crate::ingest::builder::hostname())
}

fn uid() -> String {
    // /proc/self/status: "Uid:\t<real>\t<effective>\t...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The account is named from the system, never as `unknown`.
    #[test]
    fn the_os_user_has_a_name() {
        let name = os_user();
        assert!(!name.is_empty());
        assert_ne!(name, "unknown");
        assert!(actor().starts_with(&format!("{name}@")));
    }
}
