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

/// Who holds a lock: `host:pid:start:space`, the process's start time (in clock ticks since
/// boot) telling it from another that has the same pid later, and `space` its PID namespace
/// and the kernel's boot, telling `/proc` here from the one the holder saw: two containers
/// with one host name each have a pid 1.
pub fn lock_owner() -> String {
    let pid = std::process::id();
    format!(
        "{}:{pid}:{}:{}",
        crate::ingest::builder::hostname(),
        process_start(pid).unwrap_or(0),
        pid_space()
    )
}

/// Whether the holder of a lock (see [`lock_owner`]; `host:pid` from earlier releases) may
/// still hold it: on another host or in another PID namespace, always (its lock's age tells);
/// here, while its process runs (not a zombie) and, where it names one, started when it says.
pub fn lock_holder_alive(owner: &str) -> bool {
    let parts: Vec<&str> = owner.splitn(4, ':').collect();
    let (host, pid, start, space) = match parts.as_slice() {
        [host, pid] => (*host, *pid, None, None),
        [host, pid, start] => (*host, *pid, start.parse::<u64>().ok(), None),
        [host, pid, start, space] => (*host, *pid, start.parse::<u64>().ok(), Some(*space)),
        _ => return true,
    };
    if host != crate::ingest::builder::hostname() || space.is_some_and(|s| s != pid_space()) {
        return true;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return true;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((state, started)) = stat_fields(&stat) else {
        return true;
    };
    state != "Z" && state != "X" && start.is_none_or(|s| s == 0 || s == started)
}

/// This process's PID namespace (its inode) and the kernel's boot id: where a pid means one
/// process. Empty parts when the system does not say.
fn pid_space() -> String {
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|link| {
            let link = link.to_string_lossy().into_owned();
            let inode: String = link.chars().filter(char::is_ascii_digit).collect();
            (!inode.is_empty()).then_some(inode)
        })
        .unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_owned())
        .unwrap_or_default();
    format!("{namespace}.{boot}")
}

/// A process's start time in clock ticks since boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).map(|(_, start)| start)
}

/// The state and start time of `/proc/PID/stat`: fields 3 and 22, counted after the command
/// name, which is in parentheses and may hold spaces and parentheses itself.
fn stat_fields(stat: &str) -> Option<(&str, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.first()?, fields.get(19)?.parse().ok()?))
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

    /// This process holds what it locks; a process that is gone, or another that has its pid
    /// but started at another time, holds nothing; another host's holder is taken at its word.
    #[test]
    fn lock_holders_are_told_apart_by_their_start() {
        let me = lock_owner();
        assert!(lock_holder_alive(&me), "{me}");
        let host = crate::ingest::builder::hostname();
        let pid = std::process::id();
        assert!(lock_holder_alive(&format!("{host}:{pid}")));
        assert!(!lock_holder_alive(&format!("{host}:{pid}:1")));
        assert!(!lock_holder_alive(&format!("{host}:999999999:5")));
        assert!(lock_holder_alive(&format!("elsewhere-{host}:1:1")));
        // Another PID namespace's pid is not this one's to look up.
        assert!(lock_holder_alive(&format!(
            "{host}:999999999:5:1.other-boot"
        )));
        assert!(!lock_holder_alive(&format!(
            "{host}:999999999:5:{}",
            pid_space()
        )));
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let zombie_pid = zombie.id();
        // Exited, not yet reaped.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!lock_holder_alive(&format!("{host}:{zombie_pid}")));
        zombie.wait().unwrap();
    }

    /// The account is named from the system, never as `unknown`.
    #[test]
    fn the_os_user_has_a_name() {
        let name = os_user();
        assert!(!name.is_empty());
        assert_ne!(name, "unknown");
        assert!(actor().starts_with(&format!("{name}@")));
    }
}
