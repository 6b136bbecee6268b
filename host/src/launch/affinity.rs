//! A plugin's `cpus`: made into the kernel's CPU set before the fork, and set on the
//! child between fork and exec, so the plugin's first instruction already runs there and
//! every thread and process it makes inherits it (under a PID-namespace init, the init
//! gets it and passes it on). Setting it after the start would leave the threads a
//! runtime starts early (Go's, grpcio's) where they were.

use std::path::Path;

use nix::sched::CpuSet;
use nix::unistd::Pid;

use super::StartError;
use crate::config::CpuList;

/// The set to give the process, checked against the CPUs online now and the host's
/// cpuset so that a start the kernel would refuse says why. A config file's `cpus` were
/// checked when it was read; a config built in code, or a CPU taken offline since, is
/// caught here.
pub(super) fn cpu_set(
    cpus: Option<&CpuList>,
    program: &Path,
) -> Result<Option<CpuSet>, StartError> {
    let Some(cpus) = cpus else { return Ok(None) };
    let refuse = |why: String| StartError::Spawn {
        command: program.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("cpus: {why}")),
    };
    let set = cpus.to_set().map_err(|cpu| {
        refuse(format!(
            "CPU {cpu} is past the highest this system can name ({})",
            crate::config::CPU_LIMIT - 1
        ))
    })?;
    let none_in = |list: &CpuList| !cpus.cpus().iter().any(|c| list.cpus().contains(c));
    let online = CpuList::online();
    if let Some(online) = &online
        && none_in(online)
    {
        return Err(refuse(format!(
            "none of {cpus} is online on this machine (online: {online})"
        )));
    }
    if let Some(usable) = online.as_ref().and_then(CpuList::usable)
        && none_in(&usable)
    {
        return Err(refuse(format!(
            "none of {cpus} is this host's to give: its cpuset holds {usable}"
        )));
    }
    Ok(Some(set))
}

/// A failed start, said as a refusal of `cpus` when that is what it most likely was:
/// the kernel answers EINVAL when none of the CPUs is one the process may use (outside
/// the host's cpuset, say), and exec seldom does.
pub(super) fn explain(error: std::io::Error, cpus: Option<&CpuList>) -> std::io::Error {
    match cpus {
        Some(cpus) if error.raw_os_error() == Some(nix::libc::EINVAL) => std::io::Error::new(
            error.kind(),
            format!(
                "cpus: the kernel would not run it on {cpus} (are they in the CPUs this host \
                 may use, its cpuset?): {error}"
            ),
        ),
        _ => error,
    }
}

/// Restricts the calling process to `set`. Async-signal-safe (one system call): for
/// use between fork and exec.
pub(super) fn apply(set: &CpuSet) -> std::io::Result<()> {
    nix::sched::sched_setaffinity(Pid::from_raw(0), set)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_with_no_cpu_online_is_refused_before_the_fork_saying_so() {
        let offline = crate::config::CPU_LIMIT - 1;
        let online = CpuList::online().expect("this machine lists its CPUs");
        if online.cpus().contains(&offline) {
            return;
        }
        let cpus = CpuList::new([offline]).expect("a set");
        let e = cpu_set(Some(&cpus), Path::new("/bin/p")).expect_err("refused");
        let text = e.to_string();
        assert!(
            text.contains("/bin/p") && text.contains(&format!("none of {offline} is online")),
            "{text}"
        );
        // One online CPU among them is enough for the kernel, and so for us.
        let mixed = CpuList::new([online.cpus()[0], offline]).expect("a set");
        let set = cpu_set(Some(&mixed), Path::new("/bin/p"))
            .expect("accepted")
            .expect("a set");
        assert!(set.is_set(online.cpus()[0]).expect("in range"));
        assert!(
            cpu_set(None, Path::new("/bin/p"))
                .expect("nothing to do")
                .is_none()
        );
    }

    /// Runs `f` on a thread of its own inside a cgroup v1 cpuset holding only `cpu`
    /// (v1 moves a single thread; the threads it starts follow it), or says why not.
    fn in_a_cpuset_of<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let root = Path::new("/sys/fs/cgroup/cpuset");
        let mems = std::fs::read_to_string(root.join("cpuset.mems"))
            .map_err(|e| format!("no cgroup v1 cpuset here: {e}"))?;
        let dir = root.join(format!("baton-unit-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot make a cpuset: {e}"))?;
        let ran = std::thread::scope(|s| {
            s.spawn(|| {
                std::fs::write(dir.join("cpuset.mems"), mems.trim())
                    .and_then(|()| std::fs::write(dir.join("cpuset.cpus"), cpu.to_string()))
                    .and_then(|()| {
                        std::fs::write(dir.join("tasks"), nix::unistd::gettid().to_string())
                    })
                    .map_err(|e| format!("cannot enter the cpuset: {e}"))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err("the thread panicked".into()))
        });
        // The thread has ended, so the cgroup is empty.
        let _ = std::fs::remove_dir(&dir);
        ran
    }

    #[test]
    fn a_start_whose_cpus_are_all_outside_the_hosts_cpuset_is_refused_saying_so() {
        let online = CpuList::online().expect("this machine lists its CPUs");
        let [first, .., last] = online.cpus() else {
            return; // one CPU: no cpuset can leave one out
        };
        let cpus = CpuList::new([*last]).expect("a set");
        let refused = in_a_cpuset_of(*first, || {
            cpu_set(Some(&cpus), Path::new("/bin/p"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        match refused {
            Err(why) => eprintln!("skipped: {why}"),
            Ok(result) => {
                let e = result.expect_err("none of its CPUs is the host's to give");
                assert!(
                    e.contains(&format!("none of {last} is this host's to give"))
                        && e.contains(&format!("its cpuset holds {first}")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn a_refusal_by_the_kernel_names_the_cpus_and_other_failures_pass_through() {
        let cpus = CpuList::new([3, 4]).expect("a set");
        let einval = std::io::Error::from_raw_os_error(nix::libc::EINVAL);
        let said = explain(einval, Some(&cpus)).to_string();
        assert!(
            said.contains("cpus: the kernel would not run it on 3-4")
                && said.contains("os error 22"),
            "{said}"
        );
        let enoent = std::io::Error::from_raw_os_error(nix::libc::ENOENT);
        assert_eq!(
            explain(enoent, Some(&cpus)).raw_os_error(),
            Some(nix::libc::ENOENT)
        );
        let einval = std::io::Error::from_raw_os_error(nix::libc::EINVAL);
        assert_eq!(
            explain(einval, None).raw_os_error(),
            Some(nix::libc::EINVAL)
        );
    }
}
