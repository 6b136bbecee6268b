//! Which plugin a process connecting to the host socket belongs to, told by its
//! ancestry before it has shown any token: each of a plugin's processes descends from
//! its generation's first process, a child of the host (in a PID namespace, the
//! generation's init adopts orphans, so a double fork stays below it too).

use std::path::PathBuf;

/// Ancestors looked at before a process counts as nobody's: a plugin could make a chain
/// of processes deeper than this, and its connections would then share the one bucket
/// of processes the host cannot place, never a neighbour's.
const MAX_HOPS: usize = 32;

/// One process, told apart from any later one given the same pid: a pid is reused once
/// its process is reaped, its start time (in clock ticks since boot) is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Process {
    pub(crate) pid: u32,
    pub(crate) started: u64,
}

/// What `/proc/PID/stat` says of one process.
struct Stat {
    parent: u32,
    started: u64,
}

/// The host's child that `pid` is, or descends from; `None` for a process outside the
/// host's tree (or one that exited before it could be looked at).
pub(crate) fn host_child_above(pid: u32) -> Option<Process> {
    let host = std::process::id();
    let mut pid = pid;
    for _ in 0..MAX_HOPS {
        let stat = stat_of(pid)?;
        if stat.parent == host {
            return Some(Process {
                pid,
                started: stat.started,
            });
        }
        if stat.parent <= 1 {
            return None;
        }
        pid = stat.parent;
    }
    None
}

/// Process `pid` as it is now; `None` once it is gone.
pub(crate) fn process(pid: u32) -> Option<Process> {
    stat_of(pid).map(|stat| Process {
        pid,
        started: stat.started,
    })
}

/// The parent's pid and the start time from `/proc/PID/stat`, which anyone may read
/// (not only the owner of the process, unlike most of `/proc/PID`).
fn stat_of(pid: u32) -> Option<Stat> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))).ok()?;
    // The command name, in parentheses, may itself hold spaces and parentheses. After
    // it come field 3 (state), 4 (ppid), ... 22 (starttime).
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let parent = fields.nth(1)?.parse().ok()?;
    let started = fields.nth(22 - 5)?.parse().ok()?;
    Some(Stat { parent, started })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grandchild_is_placed_under_the_hosts_child() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("the sleep's pid");
        let grandchild: u32 = line.trim().parse().expect("a pid");
        let root = process(child.id()).expect("the child runs");
        assert_eq!(host_child_above(grandchild), Some(root));
        assert_eq!(host_child_above(child.id()), Some(root));
        assert_eq!(host_child_above(1), None, "init is nobody's");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
    }

    #[test]
    fn the_start_time_is_field_22_of_stat() {
        let me = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        let field_22: u64 = me[me.rfind(')').expect("a name") + 1..]
            .split_whitespace()
            .nth(22 - 3)
            .and_then(|f| f.parse().ok())
            .expect("field 22");
        assert_eq!(
            process(std::process::id()).map(|p| p.started),
            Some(field_22)
        );
    }
}
