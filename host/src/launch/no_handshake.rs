//! What to add when a process exits before printing its handshake line: that it printed
//! none, and, when its command line names a Python file written for InfluxDB 3's
//! processing engine, that such a file needs a runner (it serves nothing by itself).

use std::io::Read;
use std::path::Path;

use crate::config::PluginConfig;

/// How much of a `.py` file is read to recognise it.
const SNIFF_BYTES: u64 = 1 << 20;

/// InfluxDB 3's entry points: a module defining one at top level is its plugin.
const ENTRY_POINTS: [&str; 3] = [
    "process_writes",
    "process_scheduled_call",
    "process_request",
];

/// The words added to "exited during start-up (...)"; `cwd` is the plugin's.
pub(super) fn hint(config: &PluginConfig, cwd: Option<&Path>) -> String {
    let mut hint = "; it printed no handshake line (a baton plugin prints `baton|1|unix|SOCKET` on stdout first)".to_owned();
    if config.args.iter().any(|a| a == "influxdb3_runner") {
        return hint;
    }
    let influx = config
        .args
        .iter()
        .filter(|a| a.ends_with(".py"))
        .find_map(|a| {
            let path = Path::new(a);
            let path = match cwd {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_owned(),
            };
            entry_point_of(&path).map(|entry| (a.clone(), entry))
        });
    if let Some((file, entry)) = influx {
        hint.push_str(&format!(
            "; {file} defines {entry}: it is an InfluxDB 3 plugin, which needs the runner: `python -m influxdb3_runner {file}`"
        ));
    }
    hint
}

/// The first InfluxDB 3 entry point `path` defines at top level, if any.
fn entry_point_of(path: &Path) -> Option<&'static str> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(SNIFF_BYTES).read_to_end(&mut bytes))
        .ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().find_map(|line| {
        let name = line.strip_prefix("def ")?.trim_start();
        ENTRY_POINTS.into_iter().find(|entry| {
            name.strip_prefix(entry)
                .is_some_and(|after| after.trim_start().starts_with('('))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_influxdb_plugin_run_bare_is_told_it_needs_the_runner() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(
            dir.path().join("alerts.py"),
            "import json\n\ndef process_writes(influxdb3_local, table_batches, args=None):\n    pass\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("plain.py"), "print('hello')\n").expect("write");
        let mut config = PluginConfig::new("python3");
        config.args = vec!["alerts.py".into()];
        let said = hint(&config, Some(dir.path()));
        assert!(said.contains("printed no handshake line"), "{said}");
        assert!(
            said.contains("alerts.py defines process_writes: it is an InfluxDB 3 plugin")
                && said.contains("python -m influxdb3_runner alerts.py"),
            "{said}"
        );
        config.args = vec!["plain.py".into()];
        let said = hint(&config, Some(dir.path()));
        assert!(said.contains("printed no handshake line"), "{said}");
        assert!(!said.contains("InfluxDB"), "{said}");
        config.args = vec!["-m".into(), "influxdb3_runner".into(), "alerts.py".into()];
        assert!(!hint(&config, Some(dir.path())).contains("InfluxDB"));
    }
}
