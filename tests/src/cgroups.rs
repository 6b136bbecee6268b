//! The pids cgroups a host makes for its plugins' generations: where they are, and
//! whether this machine lets a test's host make them at all.

use std::path::PathBuf;

/// The pids cgroup `pid` runs in (cgroup v1's `pids` hierarchy, or v2's unified one),
/// or why there is none to be found.
pub fn pids_cgroup_of(pid: u32) -> Result<PathBuf, String> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read /proc/{pid}/cgroup: {e}"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mount = |fstype: &str, option: Option<&str>| {
        mounts.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            (right.next()? == fstype).then_some(())?;
            let supers = right.nth(1).unwrap_or("");
            if option.is_some_and(|o| !supers.split(',').any(|s| s == o)) {
                return None;
            }
            let mut left = left.split_whitespace();
            let root = left.nth(3)?.to_owned();
            Some((root, PathBuf::from(left.next()?)))
        })
    };
    let mut v2 = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let found = if controllers.split(',').any(|c| c == "pids") {
            mount("cgroup", Some("pids"))
        } else if id == "0" && controllers.is_empty() {
            v2 = mount("cgroup2", None).map(|m| (m, path.to_owned()));
            continue;
        } else {
            continue;
        };
        if let Some((root, at)) = found {
            let inside = path.strip_prefix(root.as_str()).unwrap_or(path);
            return Ok(at.join(inside.trim_start_matches('/')));
        }
    }
    let ((root, at), path) = v2.ok_or("no pids cgroup controller is mounted")?;
    let inside = path.strip_prefix(root.as_str()).unwrap_or(&path);
    Ok(at.join(inside.trim_start_matches('/')))
}

/// Whether a host started by this test could make pids cgroups for its plugins (it
/// makes them beneath this test's own): `Err` says why not, for a "skipped:" line.
pub fn pids_cgroups_usable() -> Result<(), String> {
    let base = pids_cgroup_of(std::process::id())?;
    let probe = base.join(format!("baton-test-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("cannot make {}: {e}", probe.display()))?;
    // On cgroup v2 the host hands the controller down itself, as this does.
    if !probe.join("pids.max").exists() {
        let _ = std::fs::write(base.join("cgroup.subtree_control"), "+pids");
    }
    let usable = if probe.join("pids.max").exists() {
        Ok(())
    } else {
        Err(format!(
            "{} has no pids.max (the pids controller is not enabled there)",
            probe.display()
        ))
    };
    let _ = std::fs::remove_dir(&probe);
    usable
}

/// The cgroups `host_pid` has made for its plugins' generations, by name.
pub fn generation_cgroups(host_pid: u32) -> Vec<String> {
    let Ok(base) = pids_cgroup_of(host_pid) else {
        return Vec::new();
    };
    let prefix = format!("baton-{host_pid}-");
    let mut names: Vec<String> = std::fs::read_dir(&base)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
