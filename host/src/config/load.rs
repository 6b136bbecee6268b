//! Reading `baton.toml`: parsing it, checking it, and resolving the paths in it against
//! its directory.

use std::path::Path;

use super::error::{Problem, plugin_field, refuse};
use super::read::Parsed;
use super::spans::KeySpans;
use super::{Config, ConfigError};

/// The largest config file read: far beyond any real one (a thousand plugins take
/// under a megabyte), so that a wrong path (a device, a huge log) fails fast instead of
/// filling memory.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The file's text, refused past [`MAX_CONFIG_BYTES`] without reading further, and
/// refused before reading anything if it is not a regular file.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without blocking: a FIFO with no writer would otherwise hold the caller
    // for ever (the daemon reads its config on its event loop at a reload). A regular
    // file's reads ignore the flag.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = baton_transport::socket_file::describe(&kind);
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it is over {MAX_CONFIG_BYTES} bytes, the most a config file may hold"),
        ));
    }
    Ok(text)
}

impl Config {
    /// Reads and checks a config file; relative paths in it are resolved against its
    /// directory. Every mistake in it is reported, each with its line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_bounded(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let Parsed {
            mut config,
            mut problems,
            spans,
        } = Self::read(&text).map_err(|syntax| syntax.locate(path, &text, &KeySpans::default()))?;
        // Absolute, so that file-change events (which carry the watched directory's
        // path) can be matched against the configured paths.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        config.resolve_paths(&base);
        problems.extend(config.check_files(&base));
        match refuse(path, &text, &spans, problems) {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    /// Parses config text and checks its values (not the files it names); `path` is
    /// only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parsed =
            Self::read(text).map_err(|syntax| syntax.locate(path, text, &KeySpans::default()))?;
        match refuse(path, text, &parsed.spans, parsed.problems) {
            Some(e) => Err(e),
            None => Ok(parsed.config),
        }
    }

    /// The checks that look at the disk: each plugin's program and pin, its
    /// descriptors, and whether the control socket's path fits.
    fn check_files(&self, base: &Path) -> Vec<Problem> {
        let mut problems = self.check_programs(base);
        for (name, plugin) in &self.plugins {
            let Some(descriptors) = &plugin.api_descriptors else {
                continue;
            };
            if let Err(why) = crate::api::api_check::load(descriptors, &plugin.services) {
                problems.push(Problem::at(plugin_field(name, "api_descriptors"), why));
            }
        }
        let socket_len = self.socket.as_os_str().len();
        if socket_len > crate::io::socket_path::MAX_SOCKET_PATH {
            problems.push(Problem::at(
                vec!["socket".into()],
                format!(
                    "{} is {socket_len} bytes long; a Unix socket path can have at most {} \
                     (use a shorter path, or one relative to this file)",
                    self.socket.display(),
                    crate::io::socket_path::MAX_SOCKET_PATH
                ),
            ));
        }
        problems
    }

    fn resolve_paths(&mut self, base: &Path) {
        if self.socket.is_relative() {
            self.socket = base.join(&self.socket);
        }
        if let Some(dir) = &self.state_dir
            && dir.is_relative()
        {
            self.state_dir = Some(base.join(dir));
        }
        for plugin in self.plugins.values_mut() {
            // A bare program name (`python3`) is looked up in PATH, as a shell would.
            if plugin.command.components().count() > 1 && plugin.command.is_relative() {
                plugin.command = base.join(&plugin.command);
            }
            plugin.cwd = Some(match plugin.cwd.take() {
                Some(dir) if dir.is_relative() => base.join(dir),
                Some(dir) => dir,
                None => base.to_owned(),
            });
            if let Some(path) = &plugin.api_descriptors
                && path.is_relative()
            {
                plugin.api_descriptors = Some(base.join(path));
            }
            for entry in &mut plugin.watch {
                if Path::new(entry.as_str()).is_relative() {
                    *entry = base.join(entry.as_str()).to_string_lossy().into_owned();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    #[test]
    fn cpus_that_are_not_online_are_named_as_ranges() {
        use crate::config::cpus::CpuList;
        let Some(online) = CpuList::online() else {
            return;
        };
        let offline = CpuList::new((0..1024).filter(|c| !online.cpus().contains(c)));
        let Some(offline) = offline else {
            return; // every CPU a set can name is online here
        };
        let e = err("[plugins.p]\ncommand = \"/bin/true\"\ncpus = [\"0-1023\"]\n");
        let said = format!("`plugins.p.cpus`: CPUs {offline} are not online on this machine");
        assert!(e.contains(&said), "{e}");
        assert!(e.len() < 1000, "{} bytes: {e}", e.len());
    }

    #[test]
    fn a_config_path_that_is_not_a_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("a directory");
        let fifo = dir.path().join("baton.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        // A FIFO with no writer: opening it to read would wait for one, for ever (and
        // the daemon reads its config on its event loop at a reload).
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Config::load(&path).map(|_| ()).map_err(|e| e.to_string()));
        });
        let Ok(loaded) = rx.recv_timeout(std::time::Duration::from_secs(5)) else {
            // Release the reader before failing, so that no thread is left behind.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
            panic!("reading a FIFO as the config waited for a writer");
        };
        let e = loaded.expect_err("a FIFO is no config file");
        assert!(
            e.contains("baton.toml") && e.contains("a FIFO, not a regular file"),
            "{e}"
        );
        let e = Config::load(dir.path())
            .expect_err("a directory is no config file")
            .to_string();
        assert!(e.contains("a directory, not a regular file"), "{e}");
        let e = Config::load(Path::new("/dev/null"))
            .expect_err("a device is no config file")
            .to_string();
        assert!(e.contains("a character device, not a regular file"), "{e}");
        // Through a link to a regular file, as before.
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "").expect("written");
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).expect("a link");
        assert!(Config::load(&link).is_ok());
    }

    fn err(text: &str) -> String {
        match Config::parse(text, Path::new("baton.toml")) {
            Ok(c) => panic!("expected an error, parsed {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_a_full_config() -> Result<(), ConfigError> {
        let c = Config::parse(
            "socket = \"x.sock\"\nmode = \"production\"\n[plugins.counter]\ncommand = \"target/debug/counter\"\ncall_timeout_ms = 5\n[plugins.counter.restart]\nmax_crashes = 2\n",
            Path::new("b.toml"),
        )?;
        assert_eq!(c.mode, Mode::Production);
        assert_eq!(c.plugins["counter"].call_timeout_ms, 5);
        assert_eq!(c.plugins["counter"].restart.max_crashes, 2);
        assert_eq!(c.plugins["counter"].handshake_timeout_ms, 5_000);
        Ok(())
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err("[plugins.counter]\ncommand = \"c\"\ncall_timeout_ms = \"soon\"\n");
        assert!(e.starts_with("baton.toml:3:"), "{e}");
        assert!(e.contains("plugins.counter.call_timeout_ms"), "{e}");

        let e = err("[plugins.counter]\ncommand = \"c\"\nbogus = 1\n");
        assert!(e.starts_with("baton.toml:3:"), "{e}");
        assert!(e.contains("bogus"), "{e}");

        let e = err("mode = \"fast\"\n");
        assert!(e.starts_with("baton.toml:1:"), "{e}");
        assert!(e.contains("mode"), "{e}");

        // The name's own place, quoted as it is written.
        let e = err("mode = \"dev\"\n\n[plugins.\"bad name\"]\ncommand = \"c\"\n");
        assert!(
            e.starts_with("baton.toml:3:10: field `plugins.bad name`"),
            "{e}"
        );

        let e = err(
            "[plugins.counter]\ncommand = \"c\"\n\n[plugins.counter.restart]\nmax_crashes = 0\n",
        );
        assert!(e.starts_with("baton.toml:5:"), "{e}");
        assert!(e.contains("restart.max_crashes"), "{e}");

        let e = err("[plugins.counter\n");
        assert!(e.starts_with("baton.toml:1:"), "{e}");
    }

    #[test]
    fn every_mistake_is_reported_in_file_order() {
        let e = err("socket = 7\n\
                     [plugins.a]\ncomand = \"x\"\n\
                     [plugins.b]\ncommand = \"y\"\ncall_timeout_ms = 0\n\
                     [plugins.\"c d\"]\ncommand = \"z\"\nhandshake_timeout_ms = 0\n\
                     [plugins.e]\ncommand = \"w\"\nsha256 = \"nope\"\n");
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 6, "{e}");
        assert!(
            lines[0].starts_with("baton.toml:1:") && lines[0].contains("`socket`"),
            "{e}"
        );
        assert!(
            lines[1].starts_with("baton.toml:3:1: field `plugins.a.comand`: unknown key `comand`; did you mean `command`?"),
            "{e}"
        );
        assert!(
            lines[2].starts_with("baton.toml:6:1: field `plugins.b.call_timeout_ms`"),
            "{e}"
        );
        assert!(
            lines[3].starts_with("baton.toml:7:10: field `plugins.c d`"),
            "{e}"
        );
        assert!(
            lines[4].starts_with("baton.toml:9:1: field `plugins.c d.handshake_timeout_ms`"),
            "{e}"
        );
        assert!(
            lines[5].starts_with("baton.toml:12:1: field `plugins.e.sha256`"),
            "{e}"
        );
    }

    #[test]
    fn every_refused_key_of_a_table_is_reported_not_only_the_first() {
        let e = err("mode = \"fast\"\nwatchr = \"poll\"\n\
                     [plugins.a]\ncommand = 7\nargs = [1]\nsettle_ms = \"x\"\n\
                     [plugins.a.restart]\nmax_crashes = -1\n");
        let fields: Vec<&str> = e.lines().filter_map(|l| l.split('`').nth(1)).collect();
        assert_eq!(
            fields,
            [
                "mode",
                "watchr",
                "plugins.a.command",
                "plugins.a.args[0]",
                "plugins.a.settle_ms",
                "plugins.a.restart.max_crashes"
            ],
            "{e}"
        );
    }

    #[test]
    fn misspelt_keys_and_values_suggest_the_nearest() {
        let e = err("[plugins.a]\ncommand = \"x\"\n[plugins.a.restart]\nmax_crashs = 2\n");
        assert!(
            e.starts_with("baton.toml:4:1: field `plugins.a.restart.max_crashs`: unknown key `max_crashs`; did you mean `max_crashes`?"),
            "{e}"
        );
        let e = err("mod = \"dev\"\n");
        assert!(e.contains("did you mean `mode`?"), "{e}");
        let e = err("mode = \"prodution\"\n");
        assert!(e.starts_with("baton.toml:1:8: field `mode`"), "{e}");
        assert!(e.contains("did you mean `production`?"), "{e}");
        // Nothing near: the known keys are listed instead.
        let e = err("[plugins.a]\ncommand = \"x\"\nretries = 3\n");
        assert!(e.contains("expected one of `command`"), "{e}");
    }

    #[test]
    fn a_missing_command_is_placed_at_its_table() {
        let e = err("\n[plugins.a]\nargs = []\n");
        assert_eq!(
            e,
            "baton.toml:2:10: field `plugins.a.command`: required, but missing"
        );
    }

    #[test]
    fn the_metrics_endpoint_stays_on_loopback_unless_made_public() -> Result<(), ConfigError> {
        let parse = |text: &str| Config::parse(text, Path::new("baton.toml"));
        assert_eq!(parse("")?.metrics_addr, None);
        for ok in [
            "metrics_addr = \"127.0.0.1:9464\"\n",
            "metrics_addr = \"[::1]:0\"\n",
            "metrics_addr = \"0.0.0.0:9464\"\nmetrics_public = true\n",
        ] {
            assert!(parse(ok)?.metrics_addr.is_some(), "{ok}");
        }

        let e =
            err("mode = \"dev\"\nmetrics_addr = \"0.0.0.0:9464\"\n[plugins.x]\ncommand = \"x\"\n");
        assert!(e.starts_with("baton.toml:2:1: field `metrics_addr`"), "{e}");
        assert!(e.contains("metrics_public = true"), "{e}");
        let e = err("metrics_addr = \"192.168.1.2:9464\"\nmetrics_public = false\n");
        assert!(e.starts_with("baton.toml:1:"), "{e}");

        let e = err("metrics_addr = \"localhost:9464\"\n");
        assert!(
            e.starts_with("baton.toml:1:") && e.contains("metrics_addr"),
            "{e}"
        );
        Ok(())
    }
}
