//! A plugin of each SDK started by hand the way a host starts one (socket, protocol
//! version and token in its environment), for tests of what the SDKs themselves do at
//! start, on their socket and with the token, with no host in between to mask it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::host::spawn_dying_with_us;
use crate::toolchains::{go_kv, trigger_python_stubs, ts_counter, venv_python};
use crate::{bin, repo_root, unix_channel, wait_until};

/// A token of the length and alphabet the host's are.
pub const SDK_TEST_TOKEN: &str = "5ec2e7a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3";

/// One SDK's plugin that serves an application service with reflection.
pub struct SdkPlugin {
    /// The SDK's language, for messages.
    pub sdk: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The application services it serves: what its `Describe` lists.
    pub services: Vec<&'static str>,
    /// The Python stubs, kept for as long as the plugin may start.
    _stubs: Option<Arc<tempfile::TempDir>>,
}

/// The plugins of the four SDKs that serve an application service: the Rust and Python
/// triggers, the TypeScript SDK's trigger fixture and the Go SDK's go-kv. Go and
/// TypeScript are left out, with a line saying so, where their toolchain is missing.
pub fn service_plugins() -> Vec<SdkPlugin> {
    const TRIGGER: &str = "mydb.trigger.v1.Trigger";
    let mut plugins = vec![SdkPlugin {
        sdk: "Rust",
        program: bin("trigger"),
        args: Vec::new(),
        env: Vec::new(),
        services: vec![TRIGGER],
        _stubs: None,
    }];
    let stubs = Arc::new(trigger_python_stubs());
    plugins.push(SdkPlugin {
        sdk: "Python",
        program: venv_python(),
        args: vec![path_arg(
            &repo_root().join("example-plugins/python-trigger/trigger.py"),
        )],
        env: vec![("PYTHONPATH".into(), path_arg(stubs.path()))],
        services: vec![TRIGGER],
        _stubs: Some(stubs),
    });
    if let Some(go_kv) = go_kv() {
        plugins.push(SdkPlugin {
            sdk: "Go",
            program: go_kv,
            args: Vec::new(),
            env: Vec::new(),
            services: vec!["kv.v1.KV"],
            _stubs: None,
        });
    }
    // Built with the TypeScript counter: the SDK and its test fixtures.
    if let Some(command) = ts_counter() {
        plugins.push(SdkPlugin {
            sdk: "TypeScript",
            program: PathBuf::from(&command[0]),
            args: vec![path_arg(
                &repo_root().join("plugin-sdk/node/dist/test/fixtures/trigger.js"),
            )],
            env: Vec::new(),
            services: vec![TRIGGER],
            _stubs: None,
        });
    }
    plugins
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 repository path").to_owned()
}

impl SdkPlugin {
    /// Starts the plugin with `socket` as its socket path and `token` (`None`: unset) as
    /// its launch token, as a host would.
    pub fn launch(&self, socket: &Path, token: Option<&str>) -> Launched {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BATON_PLUGIN_SOCKET", socket)
            .env("BATON_PROTOCOL_VERSION", "1")
            .env_remove("BATON_PLUGIN_TOKEN")
            .env_remove("BATON_HOST_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.env("BATON_PLUGIN_TOKEN", token);
        }
        let mut child = spawn_dying_with_us(command)
            .unwrap_or_else(|e| panic!("cannot start the {} plugin: {e}", self.sdk));
        let stdout = collect(child.stdout.take());
        let stderr = collect(child.stderr.take());
        Launched {
            sdk: self.sdk,
            child,
            socket: socket.to_owned(),
            stdout,
            stderr,
        }
    }
}

/// Everything `pipe` says until it closes, gathered by a thread of its own.
fn collect(pipe: Option<impl Read + Send + 'static>) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    if let Some(mut pipe) = pipe {
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let piece = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&piece);
            }
        });
    }
    text
}

/// A plugin process started by [`SdkPlugin::launch`]; killed when dropped.
pub struct Launched {
    sdk: &'static str,
    child: Child,
    /// Its socket path.
    pub socket: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Launched {
    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for its handshake line; an error, with its stderr, if it exits instead or
    /// says nothing for `timeout`.
    pub async fn handshake(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .stdout
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .starts_with("baton|")
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the {} plugin exited ({status}) before its handshake:\n{}",
                    self.sdk,
                    self.stderr()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the {} plugin gave no handshake within {timeout:?}:\n{}",
                    self.sdk,
                    self.stderr()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for it to exit; returns its exit code and stderr, or an error if it is
    /// still running after `timeout` (it is killed when dropped).
    pub async fn exit(&mut self, timeout: Duration) -> Result<(Option<i32>, String), String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the {} plugin is still running after {timeout:?}:\n{}",
                    self.sdk,
                    self.stderr()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Its stderr is whole once the pipe has closed, just after the exit.
        let stderr = wait_until(
            &format!("the {} plugin's stderr closes", self.sdk),
            Duration::from_secs(5),
            || {
                let closed = Arc::strong_count(&self.stderr) == 1;
                std::future::ready(closed.then(|| self.stderr()))
            },
        )
        .await;
        Ok((status.code(), stderr))
    }

    /// A channel to its socket.
    pub async fn channel(&self) -> Channel {
        unix_channel(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connect to the {} plugin: {e}", self.sdk))
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request carrying `tokens` as its `x-baton-token` headers, one header each.
pub fn with_tokens<T>(message: T, tokens: &[&str]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for token in tokens {
        request.metadata_mut().append(
            "x-baton-token",
            token.parse().expect("a token is valid metadata"),
        );
    }
    request
}

/// How long a plugin may take to start or exit: Python and Node.js take seconds on a
/// loaded machine.
pub const SDK_START: Duration = Duration::from_secs(30);

/// Runs `check` on each SDK's plugin and fails naming every SDK that failed it, so
/// that one SDK's failure hides no other's.
pub async fn for_each_sdk<F, Fut>(check: F)
where
    F: Fn(SdkPlugin) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut failures = Vec::new();
    for plugin in service_plugins() {
        let sdk = plugin.sdk;
        if let Err(e) = check(plugin).await {
            failures.push(format!("{sdk}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
