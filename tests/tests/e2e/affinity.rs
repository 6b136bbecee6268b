//! `cpus`: a plugin's process, and every thread and child of it, runs on the CPUs its
//! config names; a change of them is a new process with the state moved; a CPU that is
//! not online is refused when the config is read, naming the plugin and the field.

use std::time::Duration;

use baton_host::config::CpuList;
use baton_tests::{Cpuset, TestHost, bin, plugin, run_refused_config, wait_until};

/// The CPUs a task may run on, as `/proc` lists them (`Cpus_allowed_list`).
fn allowed(status_path: &str) -> String {
    let status = std::fs::read_to_string(status_path)
        .unwrap_or_else(|e| panic!("cannot read {status_path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status_path}"))
        .trim()
        .to_string()
}

/// The allowed CPUs of every thread of `pid`, each once.
fn allowed_per_thread(pid: u32) -> Vec<String> {
    let mut lists: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the plugin's threads")
        .filter_map(|t| t.ok())
        .map(|t| allowed(&format!("{}/status", t.path().display())))
        .collect();
    lists.sort();
    lists.dedup();
    lists
}

/// The CPUs this test may run on (and so hand to a plugin), lowest first.
fn usable() -> Vec<usize> {
    let mine = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("affinity");
    (0..baton_host::config::CPU_LIMIT)
        .filter(|&c| mine.is_set(c).unwrap_or(false))
        .collect()
}

#[tokio::test]
async fn a_plugin_runs_on_its_cpus_and_a_change_of_them_keeps_its_state() {
    let usable = usable();
    let last = *usable.last().expect("a CPU");
    let first = usable[0];
    let host = TestHost::start(&format!(
        "{}{}",
        plugin("pinned", "counter", &[], &format!("cpus = [{last}]\n")),
        plugin("free", "echo", &[], "")
    ))
    .await;
    let pinned = host.serving("pinned", Duration::from_secs(10)).await;
    let free = host.serving("free", Duration::from_secs(10)).await;
    let pid = pinned.pid;
    // Every thread of the plugin (its runtime's workers included), not only the first.
    assert_eq!(allowed_per_thread(pid), [last.to_string()]);
    // A plugin without `cpus` keeps what the host has.
    let host_cpus = allowed(&format!("/proc/{}/status", host.pid()));
    assert_eq!(allowed(&format!("/proc/{}/status", free.pid)), host_cpus);
    for _ in 0..4 {
        host.call_text("pinned", "incr", "k").await;
    }

    if first == last {
        eprintln!("one usable CPU: the change of `cpus` is not tried");
        return;
    }
    // Every usable CPU, in the kernel's list format (a range where they follow on).
    let all = CpuList::new(usable.iter().copied()).expect("a list");
    // A change of `cpus` is a new process (the running threads keep theirs otherwise),
    // with the state handed over.
    let path = host.dir.path().join("baton.toml");
    let text = format!(
        "socket = \"{}\"\n\n{}{}",
        host.socket.display(),
        plugin("pinned", "counter", &[], &format!("cpus = [\"{all}\"]\n")),
        plugin("free", "echo", &[], "")
    );
    baton_tests::replace_by_rename(&path, text.as_bytes());
    let (ok, out, err) = host.ctl(&["reload-config"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("cpus"), "the change is named: {out}");
    let moved = wait_until(
        "the new generation serves",
        Duration::from_secs(20),
        || async {
            let status = host.status("pinned").await;
            (status.generation == 2 && status.pid != pid).then_some(status)
        },
    )
    .await;
    assert_eq!(allowed_per_thread(moved.pid), [all.to_string()]);
    assert_eq!(
        host.call_text("pinned", "get", "k").await,
        "4",
        "state kept"
    );
}

#[test]
fn cpus_that_are_not_online_or_not_cpus_are_refused_naming_the_field() {
    let online = CpuList::online().expect("this machine lists its CPUs");
    // The highest CPU a set can name, offline here unless this machine has 1 024.
    let offline = baton_host::config::CPU_LIMIT - 1;
    if online.cpus().contains(&offline) {
        return;
    }
    let (code, err) = run_refused_config(
        "bad.toml",
        &format!("[plugins.py]\ncommand = \"/bin/true\"\ncpus = [0, {offline}]\n"),
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("bad.toml:3:") && err.contains("plugins.py.cpus"),
        "{err}"
    );
    assert!(
        err.contains(&format!("CPU {offline} is not online")) && err.contains("online: "),
        "{err}"
    );

    for (value, words) in [
        ("[]", "lists no CPU"),
        ("[\"3-1\"]", "ends before it starts"),
        ("[99999]", "past the highest"),
        ("[-2]", "they start at 0"),
    ] {
        let (code, err) = run_refused_config(
            "bad.toml",
            &format!("[plugins.py]\ncommand = \"/bin/true\"\ncpus = {value}\n"),
        );
        assert_eq!(code, Some(64), "{value}: {err}");
        assert!(
            err.contains("plugins.py.cpus") && err.contains(words),
            "{value}: {err}"
        );
    }
}

#[test]
fn cpus_outside_the_hosts_cpuset_are_refused_naming_them() {
    let online = CpuList::online().expect("this machine lists its CPUs");
    let (first, last) = match online.cpus() {
        [first, .., last] => (*first, *last),
        _ => {
            eprintln!("skipped: one CPU online, so no cpuset can leave one out");
            return;
        }
    };
    let cpuset = match Cpuset::new(&first.to_string()) {
        Ok(cpuset) => cpuset,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let validate = |cpus: &str, inside: bool| {
        let config = dir.path().join("baton.toml");
        std::fs::write(
            &config,
            format!("[plugins.py]\ncommand = \"/bin/true\"\ncpus = {cpus}\n"),
        )
        .expect("write config");
        let mut command = if inside {
            cpuset.command(&bin("baton"))
        } else {
            std::process::Command::new(bin("baton"))
        };
        let out = command
            .arg("validate")
            .arg(&config)
            .output()
            .expect("run baton");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Only the other CPU, or both: the kernel would refuse the first start, and give the
    // second a set narrowed without a word.
    for cpus in [format!("[{last}]"), format!("[{first}, {last}]")] {
        let (code, err) = validate(&cpus, true);
        assert_eq!(code, Some(64), "{cpus}: {err}");
        assert!(
            err.contains("plugins.py.cpus")
                && err.contains(&format!("CPU {last} is online but not this host's to give"))
                && err.contains(&format!("holds {first}")),
            "{cpus}: {err}"
        );
        // The same config, outside the cpuset: accepted.
        let (code, err) = validate(&cpus, false);
        assert_eq!(code, Some(0), "{cpus}, outside: {err}");
    }
    // Inside, the CPU it holds is fine.
    let (code, err) = validate(&format!("[{first}]"), true);
    assert_eq!(code, Some(0), "{err}");
}
