//! What the tests read about processes from /proc: liveness, CPU time, open files,
//! children and their states, environment.

use std::time::Duration;

/// Whether a process is running (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state letter follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// CPU time `pid` has used (all threads, user + system).
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let malformed = || std::io::Error::other(format!("malformed /proc/{pid}/stat"));
    // Fields after the parenthesised name: state is field 3; utime and stime are 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(malformed)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(malformed)
    };
    let total = ticks(11)? + ticks(12)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)
        .unwrap_or(100) as u64;
    Ok(Duration::from_nanos(total * 1_000_000_000 / hz))
}

/// CPU time the process `pid` uses while `work` runs.
pub async fn cpu_used_during<F: std::future::Future<Output = ()>>(pid: u32, work: F) -> Duration {
    let before = cpu_time(pid).expect("the process's CPU time");
    work.await;
    cpu_time(pid)
        .expect("the process's CPU time")
        .saturating_sub(before)
}

/// The number of open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The children of a process, lowest pid first, each with its state letter from
/// `/proc/<pid>/stat` (`Z` for a zombie). A process that ends while the table is read is
/// left out.
pub fn children_with_state(pid: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // After the parenthesised name: the state, then the parent's pid.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next());
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if let (Some(state), Some(parent)) = (state, ppid)
            && parent == pid
        {
            found.push((child, state));
        }
    }
    found.sort_unstable();
    found
}

/// Zombie children of a process (exited, never reaped).
pub fn zombie_children(pid: u32) -> Vec<u32> {
    children_with_state(pid)
        .into_iter()
        .filter_map(|(child, state)| (state == 'Z').then_some(child))
        .collect()
}

/// One variable of a running process's environment (as it was started).
pub fn process_env(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        entry
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::to_owned)
    })
}

/// The write-like system calls (`syscw` in /proc/PID/io) a process has made.
pub fn writes_of(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("syscw in /proc/PID/io")
}

/// A memory figure of `pid` from `/proc/<pid>/status`, in KiB: `field` is `VmRSS`,
/// `VmHWM` (the most it has held at once), `VmSize` (all it has set aside)…; 0 if the
/// process or the field is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// One of `pid`'s resource limits from /proc/PID/limits, such as "Max open files": its
/// soft and hard values as written there ("unlimited" or a number).
pub fn rlimit_of(pid: u32, name: &str) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let mut values = line[name.len()..].split_whitespace();
    Some((values.next()?.to_owned(), values.next()?.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_child_is_listed_and_is_a_zombie_once_it_exits_unreaped() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("start sleep");
        let pid = child.id();
        assert!(
            children_with_state(me).iter().any(|&(c, _)| c == pid),
            "{pid} not among {:?}",
            children_with_state(me)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !zombie_children(me).contains(&pid) {
            assert!(Instant::now() < deadline, "{pid} never showed as a zombie");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().expect("reap sleep");
        assert!(!children_with_state(me).iter().any(|&(c, _)| c == pid));
    }
}
