//! Which plugin a process connecting to the host socket belongs to, told by its
//! ancestry before it has shown any token: each of a plugin's processes descends from
//! its generation's first process, a child of the host (in a PID namespace, the
//! generation's init adopts orphans, so a double fork stays below it too).

use std::path::PathBuf;

/// Ancestors looked at before a process counts as nobody's: a plugin could make a chain
/// of processes deeper than this, and its connections would then share the one bucket
/// of processes the host cannot place, never a neighbour's.
const MAX_HOPS: usize = 32;

/// The host's child that `pid` is, or descends from; `None` for a process outside the
/// host's tree (or one that exited before it could be looked at).
pub(crate) fn host_child_above(pid: u32) -> Option<u32> {
    let host = std::process::id();
    let mut pid = pid;
    for _ in 0..MAX_HOPS {
        let parent = parent_of(pid)?;
        if parent == host {
            return Some(pid);
        }
        if parent <= 1 {
            return None;
        }
        pid = parent;
    }
    None
}

/// The parent's pid from `/proc/PID/stat`, which anyone may read (not only the owner of
/// the process, unlike most of `/proc/PID`).
fn parent_of(pid: u32) -> Option<u32> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))).ok()?;
    // The command name, in parentheses, may itself hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
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
        assert_eq!(host_child_above(grandchild), Some(child.id()));
        assert_eq!(host_child_above(child.id()), Some(child.id()));
        assert_eq!(host_child_above(1), None, "init is nobody's");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
    }
}
