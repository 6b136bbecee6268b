//! A cpuset cgroup of a test's own, to run the host where it may use fewer CPUs than the
//! machine has online (as in a container): made in the cgroup v1 cpuset hierarchy, or
//! in a v2 hierarchy whose root already hands cpuset down, and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static MADE: AtomicUsize = AtomicUsize::new(0);

/// A cgroup whose processes may run on the CPUs it was made with, and no others.
pub struct Cpuset {
    dir: PathBuf,
}

impl Cpuset {
    /// A cpuset holding `cpus` (the kernel's list format), or why this machine cannot
    /// make one for a test.
    pub fn new(cpus: &str) -> Result<Self, String> {
        let name = format!(
            "baton-test-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        );
        let v1 = Path::new("/sys/fs/cgroup/cpuset");
        let v2 = Path::new("/sys/fs/cgroup");
        let (dir, mems) = if v1.join("cpuset.cpus").exists() {
            let mems = std::fs::read_to_string(v1.join("cpuset.mems"))
                .map_err(|e| format!("cannot read the root cpuset's memory nodes: {e}"))?;
            (v1.join(&name), Some(mems.trim().to_owned()))
        } else if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpuset"))
        {
            (v2.join(&name), None)
        } else {
            return Err(
                "no cpuset cgroup to make one in (cgroup v1 cpuset, or v2 with \
                        cpuset in the root's subtree_control)"
                    .into(),
            );
        };
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot make the cgroup {}: {e}", dir.display()))?;
        let made = Self { dir };
        let write = |file: &str, value: &str| {
            std::fs::write(made.dir.join(file), value)
                .map_err(|e| format!("cannot write {value:?} to {file}: {e}"))
        };
        if let Some(mems) = mems {
            write("cpuset.mems", &mems)?;
        }
        write("cpuset.cpus", cpus)?;
        Ok(made)
    }

    /// `program`, started inside the cpuset (a shell moves itself in, then becomes it).
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(self.dir.join("cgroup.procs"))
            .arg(program);
        command
    }
}

impl Drop for Cpuset {
    fn drop(&mut self) {
        // Empty by now: the processes started in it have exited.
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("cannot remove the cgroup {}: {e}", self.dir.display());
        }
    }
}
