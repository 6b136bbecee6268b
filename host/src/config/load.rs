//! Reading `baton.toml`: parsing it, checking it, and resolving the paths in it against
//! its directory.

use std::path::Path;

use super::Config;
use super::error::{ConfigError, find_key, line_column};

impl Config {
    /// Reads and checks a config file; relative paths in it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        // Absolute, so that file-change events (which carry the watched directory's
        // path) can be matched against the configured paths.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        config.resolve_paths(&base);
        for (name, plugin) in &config.plugins {
            let Some(descriptors) = &plugin.api_descriptors else {
                continue;
            };
            if let Err(why) = crate::api_check::load(descriptors, &plugin.services) {
                let field = format!("plugins.{name}.api_descriptors");
                let (line, column) =
                    find_key(&text, &field).map_or((0, 0), |s| line_column(&text, s.start));
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    line,
                    column,
                    field,
                    message: why,
                });
            }
        }
        let socket_len = config.socket.as_os_str().len();
        if socket_len > crate::launch::MAX_SOCKET_PATH {
            let (line, column) =
                find_key(&text, "socket").map_or((0, 0), |s| line_column(&text, s.start));
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                field: "socket".into(),
                message: format!(
                    "{} is {socket_len} bytes long; a Unix socket path can have at most {} \
                     (use a shorter path, or one relative to this file)",
                    config.socket.display(),
                    crate::launch::MAX_SOCKET_PATH
                ),
            });
        }
        Ok(config)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let located = |span: Option<std::ops::Range<usize>>, field: String, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_column(text, s.start));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                field,
                message,
            }
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| located(e.span(), String::new(), e.message().to_owned()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            located(inner.span(), field, inner.message().to_owned())
        })?;
        config.validate().map_err(|(field, message)| {
            let span = find_key(text, &field);
            located(span, field, message)
        })?;
        Ok(config)
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

        let e = err("[plugins.\"bad name\"]\ncommand = \"c\"\n");
        assert!(e.contains("plugins.bad name"), "{e}");

        let e = err(
            "[plugins.counter]\ncommand = \"c\"\n\n[plugins.counter.restart]\nmax_crashes = 0\n",
        );
        assert!(e.starts_with("baton.toml:5:"), "{e}");
        assert!(e.contains("restart.max_crashes"), "{e}");

        let e = err("[plugins.counter\n");
        assert!(e.starts_with("baton.toml:1:"), "{e}");
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
