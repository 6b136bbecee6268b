//! The plugins' Python environments: one shared virtualenv that `install_packages` and
//! `install_requirements` fill with pip, and one per plugin package with its own
//! `requirements.txt`, keyed by that file's content.
//!
//! They live in tsdb's data directory (`DATA_DIR/plugin_envs/`), not in the plugin
//! directory as InfluxDB's `<plugin-dir>/.venv`: the plugin directory is what HTTP
//! uploads write and what the plugins' watchers see, and its bounds (1000 files) would
//! be spent by one environment. Each is made from tsdb's `python` with `--without-pip`
//! (0.1 s, where a venv with its own pip takes 6 s) and filled by that python's pip
//! (`pip --python ENV`); a `.pth` file puts tsdb's python's own site-packages (baton's
//! SDK, gRPC) after the environment's, so the runner runs in it and a package the
//! environment installs wins over tsdb's copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;

use crate::bounded_child;

/// How long one pip run may take.
pub const PIP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long making an environment (the venv, the `.pth`) may take.
const MAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of pip's output is kept for an error: its end, where the reason is.
const PIP_OUTPUT: usize = 8 << 10;
/// Packages in one `install_packages`, and the length of one package's specifier.
pub const MAX_PACKAGES: usize = 64;
pub const MAX_SPECIFIER: usize = 200;
/// The largest `requirements.txt` read.
const MAX_REQUIREMENTS: u64 = 256 << 10;

/// The environments' directory and the python that makes them.
#[derive(Debug, Clone)]
pub struct Environments {
    root: PathBuf,
    base_python: PathBuf,
    /// Held for each change, so that two pip runs never write one environment.
    changing: Arc<tokio::sync::Mutex<()>>,
}

/// Why an environment could not be made or filled: a bad request, or a failure.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

const SHARED: &str = "shared";

/// Checks one requirement as pip would read it, refusing anything that is not a
/// package from the index: an option (`-`), a path, a URL, a direct reference (`@`).
pub fn check_requirement(spec: &str, field: &str) -> Result<(), String> {
    let spec = spec.trim();
    let refuse = |why: &str| Err(format!("{field}: {spec:?} {why}"));
    if spec.is_empty() {
        return refuse("is empty");
    }
    if spec.len() > MAX_SPECIFIER {
        return Err(format!("{field}: longer than {MAX_SPECIFIER} characters"));
    }
    if spec.starts_with('-') {
        return refuse("is a pip option, not a package");
    }
    if !spec.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return refuse("does not start with a package name");
    }
    if spec.contains("://") || spec.contains('@') {
        return refuse("is a URL or a direct reference, not a package of the index");
    }
    if spec.contains('/') || spec.contains('\\') {
        return refuse("is a path, not a package");
    }
    Ok(())
}

/// The requirements of `text` (a requirements file), each checked; `field` names the
/// file in errors, with the line.
fn check_requirements_file(text: &str, field: &str) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        let line = line.split_once(" #").map_or(line, |(l, _)| l).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        check_requirement(line, &format!("{field}, line {}", n + 1))?;
    }
    Ok(())
}

/// The key of a requirements file: FNV-1a of its bytes (the environment keeps a copy
/// of the file, compared on use, so a collision is found, not used).
fn key_of(text: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn python_in(env: &Path) -> PathBuf {
    env.join("bin").join("python")
}

fn read_requirements(file: &Path, field: &str) -> Result<String, String> {
    let size = std::fs::metadata(file)
        .map_err(|e| format!("{field}: {}: {e}", file.display()))?
        .len();
    if size > MAX_REQUIREMENTS {
        return Err(format!(
            "{field}: {} is larger than {MAX_REQUIREMENTS} bytes",
            file.display()
        ));
    }
    std::fs::read_to_string(file).map_err(|e| format!("{field}: {}: {e}", file.display()))
}

/// The text of package `plugin`'s own `requirements.txt`, if it has one (bounded).
pub fn requirements_of(plugin: &Path) -> Option<Result<String, String>> {
    let requirements = plugin.join("requirements.txt");
    (plugin.is_dir() && requirements.is_file())
        .then(|| read_requirements(&requirements, "plugin_filename"))
}

impl Environments {
    /// The environments under `data_dir`, made from `base_python`.
    pub fn new(data_dir: &Path, base_python: &Path) -> Self {
        Self {
            root: data_dir.join("plugin_envs"),
            base_python: base_python.to_owned(),
            changing: Arc::default(),
        }
    }

    /// The shared environment's directory.
    pub fn shared(&self) -> PathBuf {
        self.root.join(SHARED)
    }

    /// The python an InfluxDB 3 plugin at `plugin` runs on, if not tsdb's own: its
    /// package's environment when it has a `requirements.txt`, else the shared one
    /// once made. The error (field `plugin_filename`) says what to do.
    pub fn python_for(&self, plugin: &Path) -> Result<Option<PathBuf>, String> {
        let requirements = plugin.join("requirements.txt");
        if plugin.is_dir() && requirements.is_file() {
            let text = read_requirements(&requirements, "plugin_filename")?;
            let env = self.root.join(format!("req-{}", key_of(text.as_bytes())));
            let kept = std::fs::read_to_string(env.join("requirements.txt")).ok();
            if kept.as_deref() == Some(text.as_str()) && python_in(&env).exists() {
                return Ok(Some(python_in(&env)));
            }
            return Err(format!(
                "plugin_filename: the environment of {}'s requirements.txt is not made yet (tsdb makes it when it sees the file change, within seconds)",
                plugin.display()
            ));
        }
        let shared = python_in(&self.shared());
        Ok(shared.exists().then_some(shared))
    }

    /// Makes the environment `plugin` runs on, if missing: the shared one, and for a
    /// package with a `requirements.txt`, its own, filled from that file.
    pub async fn prepare(&self, plugin: &Path) -> Result<(), EnvError> {
        let _changing = self.changing.lock().await;
        self.make_shared().await?;
        let requirements = plugin.join("requirements.txt");
        if !(plugin.is_dir() && requirements.is_file()) {
            return Ok(());
        }
        let field = "plugin_filename";
        let text = read_requirements(&requirements, field).map_err(EnvError::Refused)?;
        check_requirements_file(&text, &format!("{field}: {}", requirements.display()))
            .map_err(EnvError::Refused)?;
        let env = self.root.join(format!("req-{}", key_of(text.as_bytes())));
        if python_in(&env).exists() {
            return Ok(());
        }
        // Made aside and renamed into place, so that a half-made environment (pip
        // failed, tsdb stopped) is never taken for a made one.
        let making = self
            .root
            .join(format!(".making-{}", key_of(text.as_bytes())));
        let _ = std::fs::remove_dir_all(&making);
        self.make(&making).await?;
        let copy = making.join("requirements.txt");
        std::fs::write(&copy, &text)
            .map_err(|e| EnvError::Failed(format!("{}: {e}", copy.display())))?;
        let mut args = vec!["-r".to_owned(), copy.to_string_lossy().into_owned()];
        args.insert(0, "install".into());
        self.pip(&making, &args, field).await?;
        std::fs::rename(&making, &env).map_err(|e| {
            EnvError::Failed(format!(
                "{field}: cannot move {} to {}: {e}",
                making.display(),
                env.display()
            ))
        })?;
        tracing::info!(
            "plugin environment {} made for {}",
            env.display(),
            plugin.display()
        );
        Ok(())
    }

    /// `pip install PACKAGES` into the shared environment (made if missing); the
    /// environment's directory.
    pub async fn install_packages(&self, packages: &[String]) -> Result<PathBuf, EnvError> {
        if packages.is_empty() {
            return Err(EnvError::Refused("packages: the list is empty".into()));
        }
        if packages.len() > MAX_PACKAGES {
            return Err(EnvError::Refused(format!(
                "packages: more than {MAX_PACKAGES} packages"
            )));
        }
        for (i, spec) in packages.iter().enumerate() {
            check_requirement(spec, &format!("packages[{i}]")).map_err(EnvError::Refused)?;
        }
        let _changing = self.changing.lock().await;
        self.make_shared().await?;
        let mut args = vec!["install".to_owned()];
        args.extend(packages.iter().map(|p| p.trim().to_owned()));
        self.pip(&self.shared(), &args, "packages").await?;
        Ok(self.shared())
    }

    /// `pip install -r FILE` into the shared environment; `file` is inside the plugin
    /// directory (the caller resolved it) and each of its lines is checked first.
    pub async fn install_requirements(&self, file: &Path) -> Result<PathBuf, EnvError> {
        let field = "requirements_location";
        let text = read_requirements(file, field).map_err(EnvError::Refused)?;
        check_requirements_file(&text, field).map_err(EnvError::Refused)?;
        let _changing = self.changing.lock().await;
        self.make_shared().await?;
        let args = [
            "install".to_owned(),
            "-r".to_owned(),
            file.to_string_lossy().into_owned(),
        ];
        self.pip(&self.shared(), &args, field).await?;
        Ok(self.shared())
    }

    async fn make_shared(&self) -> Result<(), EnvError> {
        let shared = self.shared();
        if python_in(&shared).exists() {
            return Ok(());
        }
        self.make(&shared).await
    }

    /// A new virtualenv at `env` whose python sees tsdb's python's packages after its own.
    async fn make(&self, env: &Path) -> Result<(), EnvError> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| EnvError::Failed(format!("{}: {e}", self.root.display())))?;
        let mut venv = Command::new(&self.base_python);
        venv.args(["-m", "venv", "--without-pip"]).arg(env);
        self.checked(venv, "python -m venv").await?;
        let ask = "import json, site, sysconfig; print(json.dumps([sysconfig.get_paths()['purelib']] + site.getsitepackages()))";
        let mut base = Command::new(&self.base_python);
        base.args(["-c", ask]);
        let base_paths = self.checked(base, "python's site-packages").await?;
        let mut own = Command::new(python_in(env));
        own.args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]);
        let own_site = self.checked(own, "the environment's site-packages").await?;
        let base_paths: Vec<String> = serde_json::from_str(base_paths.trim()).map_err(|e| {
            EnvError::Failed(format!("python's site-packages: {e}: {base_paths:?}"))
        })?;
        let own_site = PathBuf::from(own_site.trim());
        // `addsitedir`, not a bare path: tsdb's python may itself find packages through
        // `.pth` files of its site-packages (an editable install, the SDK's path), which
        // Python reads only in a site directory.
        let mut lines: Vec<String> = Vec::new();
        for p in &base_paths {
            if Path::new(p) != own_site {
                let quoted =
                    serde_json::to_string(p).map_err(|e| EnvError::Failed(e.to_string()))?;
                let line = format!("import site; site.addsitedir({quoted})");
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
        let pth = own_site.join("tsdb_base_python.pth");
        std::fs::write(&pth, lines.join("\n") + "\n")
            .map_err(|e| EnvError::Failed(format!("{}: {e}", pth.display())))?;
        Ok(())
    }

    /// Runs `command` (a step of making an environment); its stdout.
    async fn checked(&self, command: Command, what: &str) -> Result<String, EnvError> {
        let done = bounded_child::run(command, b"", MAKE_TIMEOUT, 1 << 20, PIP_OUTPUT)
            .await
            .map_err(|e| EnvError::Failed(format!("{what}: {e}")))?;
        if !done.status.success() {
            return Err(EnvError::Failed(format!(
                "{what} failed ({}): {}",
                done.status,
                done.stderr.trim()
            )));
        }
        Ok(String::from_utf8_lossy(&done.stdout).into_owned())
    }

    /// tsdb's python's pip, run on the environment at `env`.
    async fn pip(&self, env: &Path, args: &[String], field: &str) -> Result<(), EnvError> {
        let mut pip = Command::new(&self.base_python);
        pip.args(["-m", "pip", "--python"])
            .arg(python_in(env))
            .args(["--no-input", "--disable-pip-version-check"])
            .args(args);
        let done = bounded_child::run(pip, b"", PIP_TIMEOUT, PIP_OUTPUT, PIP_OUTPUT)
            .await
            .map_err(|e| EnvError::Failed(format!("{field}: pip: {e}")))?;
        if !done.status.success() {
            return Err(EnvError::Failed(format!(
                "{field}: pip install failed ({}): {}",
                done.status,
                done.stderr.trim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requirement_is_a_package_of_the_index_and_nothing_else() {
        for good in [
            "six",
            "six==1.16.0",
            "requests[socks]>=2,<3",
            "a.b_c-d~=1.0",
        ] {
            assert!(check_requirement(good, "packages[0]").is_ok(), "{good}");
        }
        for (bad, says) in [
            ("--index-url=http://x", "pip option"),
            ("-e .", "pip option"),
            ("./local", "package name"),
            ("/tmp/x.whl", "package name"),
            ("pkg/x.whl", "path"),
            ("git+https://x/y", "URL"),
            ("six @ https://x/six.whl", "URL"),
            ("", "empty"),
        ] {
            let error = check_requirement(bad, "packages[0]").expect_err(bad);
            assert!(error.starts_with("packages[0]: "), "{error}");
            assert!(error.contains(says), "{bad}: {error}");
        }
        let error = check_requirements_file("six\n# c\n\n-r other.txt\n", "f")
            .expect_err("an option on line 4");
        assert!(error.contains("line 4"), "{error}");
    }
}
