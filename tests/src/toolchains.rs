//! Plugins in other languages, built or set up once per test run: the Python
//! environment, the Go examples and the TypeScript counter; a missing toolchain is
//! reported as a skip, not a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::repo_root;

/// The repository's Python, with grpcio and the baton SDK (made by setup-python.sh).
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash plugin-sdk/python/setup-python.sh` (scripts/test.sh does)",
        python.display()
    );
    python
}

/// The Python stubs of the example application API, generated as any Python plugin author
/// would (grpcio-tools), into a fresh directory for PYTHONPATH.
pub fn trigger_python_stubs() -> tempfile::TempDir {
    let stubs = tempfile::tempdir().expect("temp dir");
    let generated = Command::new(venv_python())
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo_root().join("example-plugins/trigger/proto"))
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg(repo_root().join("example-plugins/trigger/proto/mydb/trigger/v1/trigger.proto"))
        .status()
        .expect("run grpc_tools.protoc");
    assert!(generated.success(), "grpc_tools.protoc failed");
    stubs
}

/// Whether `tool` runs here (`tool version_arg` exits 0); when it does not, prints a
/// line saying that `what` is skipped and why, so a machine without Go or Node.js still
/// runs every other test and says what it left out.
pub fn tool_or_skip(tool: &str, version_arg: &str, what: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: {what} needs `{tool}`, which is not installed here");
    }
    found
}

/// Runs a build step in `dir`, panicking with its output if it fails.
fn build_step(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", dir.display()));
    assert!(
        out.status.success(),
        "`{program} {}` in {} failed:\n{}{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Go counter (`example-plugins/go-counter`), built once per test run into
/// `target/go/`; `None`, with a line saying so, where Go is not installed.
pub fn go_counter() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| go_example("go-counter", ".", "go-counter", "the Go counter"))
        .clone()
}

/// The go-kv example (`example-plugins/go-kv`: the go-plugin port), built once per
/// test run into `target/go/`; `None`, with a line saying so, where Go is not installed.
pub fn go_kv() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| go_example("go-kv", ".", "go-kv", "the go-kv example"))
        .clone()
}

/// go-kv's Go client (`example-plugins/go-kv/client`), which calls the plugin through
/// a daemon with the generated kv.v1 client, built like [`go_kv`].
pub fn go_kv_client() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| go_example("go-kv", "./client", "go-kv-client", "go-kv's client"))
        .clone()
}

/// Builds `package` of the module `example-plugins/<module>` with `go build` into
/// `target/go/<binary>`.
fn go_example(module: &str, package: &str, binary: &str, what: &str) -> Option<PathBuf> {
    if !tool_or_skip("go", "version", what) {
        return None;
    }
    let out = repo_root().join("target/go").join(binary);
    let out_arg = out.to_str().expect("a UTF-8 repository path");
    build_step(
        &repo_root().join("example-plugins").join(module),
        "go",
        &["build", "-o", out_arg, package],
    );
    Some(out)
}

/// The command of the TypeScript counter (`example-plugins/ts-counter`): `node` and its
/// compiled script, built once per test run (npm ci the first time, then tsc, for the SDK
/// and the counter); `None`, with a line saying so, where Node.js or npm is not installed.
pub fn ts_counter() -> Option<Vec<String>> {
    static BUILT: std::sync::OnceLock<Option<Vec<String>>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !tool_or_skip("node", "--version", "the TypeScript counter")
                || !tool_or_skip("npm", "--version", "the TypeScript counter")
            {
                return None;
            }
            for dir in ["plugin-sdk/node", "example-plugins/ts-counter"] {
                let dir = repo_root().join(dir);
                if !dir.join("node_modules").exists() {
                    build_step(&dir, "npm", &["ci", "--no-audit", "--no-fund"]);
                }
                build_step(&dir, "npm", &["run", "build"]);
            }
            let script = repo_root().join("example-plugins/ts-counter/dist/src/main.js");
            Some(vec![
                "node".to_owned(),
                script.to_str().expect("a UTF-8 repository path").to_owned(),
            ])
        })
        .clone()
}
