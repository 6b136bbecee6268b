//! Noticing that a plugin's binary or sources changed. One `BinaryWatcher` serves the
//! whole host: it watches *directories* (deploys and builds replace files by rename or
//! hard link, editors save by rename, and a watch on the file itself misses all of
//! those) and nudges each plugin whose files an event touches. Whether the content
//! really changed, and whether it has settled, the plugin's supervisor decides from
//! file metadata ([`Fingerprint`]), so events only need to be a hint: a burst of them
//! costs one nudge, and nothing runs while nothing changes.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::WatcherKind;

mod pending;

use pending::{Backend, Directories};

/// What one plugin depends on: files by exact path, and glob patterns.
#[derive(Debug, Clone, Default)]
pub struct WatchSet {
    files: Vec<PathBuf>,
    patterns: Vec<glob::Pattern>,
}

impl WatchSet {
    /// The binary (if given as a path) and the `watch` entries of a plugin. A directory
    /// entry means everything under it.
    pub fn new(binary: Option<&Path>, entries: &[String]) -> Self {
        let mut set = Self::default();
        set.files.extend(binary.map(Path::to_owned));
        for entry in entries {
            let has_glob = entry.contains(['*', '?', '[']);
            if !has_glob && Path::new(entry).is_dir() {
                let all = format!("{}/**/*", entry.trim_end_matches('/'));
                set.patterns.extend(glob::Pattern::new(&all).ok());
            } else if has_glob {
                set.patterns.extend(glob::Pattern::new(entry).ok());
            } else {
                set.files.push(PathBuf::from(entry));
            }
        }
        set
    }

    /// Also watches `path`, which may not exist (its absence is not a missing file).
    pub fn optional(mut self, path: &Path) -> Self {
        let exact = glob::Pattern::escape(&path.to_string_lossy());
        self.patterns.extend(glob::Pattern::new(&exact).ok());
        self
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.patterns.is_empty()
    }

    fn matches(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f == path) || self.patterns.iter().any(|p| p.matches_path(path))
    }

    /// The directories to watch, and whether recursively.
    fn directories(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let mut dirs = BTreeSet::new();
        for f in self.files.iter().chain(&self.links()) {
            if let Some(parent) = f.parent() {
                dirs.insert((parent.to_owned(), false));
            }
        }
        for p in &self.patterns {
            let text = p.as_str();
            // The directory part before the first wildcard.
            let fixed_end = text.find(['*', '?', '[']).unwrap_or(text.len());
            let fixed = &text[..fixed_end];
            let dir = match fixed.rfind('/') {
                Some(i) => PathBuf::from(&fixed[..i.max(1)]),
                None => PathBuf::from("."),
            };
            let recursive = text[fixed_end..].contains("**") || text[fixed_end..].contains('/');
            dirs.insert((dir, recursive));
        }
        dirs.into_iter()
            .map(|(d, r)| {
                let mode = if r {
                    RecursiveMode::Recursive
                } else {
                    RecursiveMode::NonRecursive
                };
                (d, mode)
            })
            .collect()
    }

    /// The symbolic links met on the way to each watched file, and where each file
    /// finally is: a deploy that flips a link (as Kubernetes does with `..data` when a
    /// volume is updated) changes the file without touching its own name.
    fn links(&self) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        for file in &self.files {
            let (links, resolved) = link_chain(file);
            found.extend(links);
            if resolved != *file {
                found.insert(resolved);
            }
        }
        found
    }

    /// The current metadata of every watched file.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut paths: BTreeSet<PathBuf> = self.files.iter().cloned().collect();
        for p in &self.patterns {
            if let Ok(found) = glob::glob(p.as_str()) {
                paths.extend(found.flatten().filter(|p| p.is_file()));
            }
        }
        Fingerprint(
            paths
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p).ok().map(|m| FileMeta {
                        dev: m.dev(),
                        ino: m.ino(),
                        size: m.size(),
                        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
                    });
                    (p, meta)
                })
                .collect(),
        )
    }
}

/// Every symbolic link met while resolving `path` (each as the path it was met at),
/// and the path it resolves to. Stops quietly at a missing component or after 40
/// links (a loop), as the kernel would.
fn link_chain(path: &Path) -> (Vec<PathBuf>, PathBuf) {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::path::Component;
    enum Part {
        Root,
        Parent,
        Name(OsString),
    }
    let parts = |p: &Path| -> Vec<Part> {
        p.components()
            .filter_map(|c| match c {
                Component::RootDir | Component::Prefix(_) => Some(Part::Root),
                Component::CurDir => None,
                Component::ParentDir => Some(Part::Parent),
                Component::Normal(name) => Some(Part::Name(name.to_owned())),
            })
            .collect()
    };
    let mut links = Vec::new();
    let mut pending: VecDeque<Part> = parts(path).into();
    let mut current = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        let name = match part {
            Part::Root => {
                current = PathBuf::from("/");
                continue;
            }
            Part::Parent => {
                current.pop();
                continue;
            }
            Part::Name(name) => name,
        };
        current.push(name);
        let is_link = std::fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            continue;
        }
        hops += 1;
        let Ok(target) = std::fs::read_link(&current) else {
            break;
        };
        if hops > 40 {
            break;
        }
        links.push(current.clone());
        current.pop();
        // The target's parts come before what was left of the path.
        for part in parts(&target).into_iter().rev() {
            pending.push_front(part);
        }
    }
    (links, current)
}

/// The identity and last change of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileMeta {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// The metadata of a plugin's watched files at one moment: equal fingerprints mean
/// nothing changed (a rename or hard link changes the inode, a write the size or
/// modification time).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(PathBuf, Option<FileMeta>)>);

impl Fingerprint {
    /// The watched files that are missing, if any.
    pub fn missing(&self) -> Vec<&Path> {
        self.0
            .iter()
            .filter(|(_, m)| m.is_none())
            .map(|(p, _)| p.as_path())
            .collect()
    }
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The OS limit on inotify watches was reached.
    #[error(
        "cannot watch {}: the system's inotify watch limit is reached; raise \
         fs.inotify.max_user_watches (sysctl) or set watcher = \"poll\" in the config",
        path.display()
    )]
    TooManyWatches {
        /// The directory.
        path: PathBuf,
    },
    /// Any other failure, with the directory it concerns.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
}

struct Subscriber {
    set: WatchSet,
    /// The links on the way to its files, and where they lead (see [`WatchSet::links`]).
    links: BTreeSet<PathBuf>,
    nudge: mpsc::Sender<()>,
    /// What the poller saw last (unused with native events).
    last: Fingerprint,
}

/// The host's one file watcher.
pub struct BinaryWatcher {
    directories: Arc<Mutex<Directories>>,
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
}

impl BinaryWatcher {
    /// Starts the watcher. `Native` falls back to polling if the OS watcher cannot start.
    pub fn start(kind: WatcherKind, poll_interval: Duration) -> Result<Self, notify::Error> {
        let subscribers: Arc<Mutex<Vec<Subscriber>>> = Arc::default();
        // Wakes the thread that follows directories not made yet; one pending wake-up
        // covers a burst of events.
        let (changed, wakes) = std::sync::mpsc::sync_channel::<()>(1);
        let handler = {
            let subscribers = subscribers.clone();
            move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // Reads (including our own copy of a binary) are not changes.
                if let EventKind::Access(kind) = event.kind
                    && kind != AccessKind::Close(AccessMode::Write)
                {
                    return;
                }
                let _ = changed.try_send(());
                let mut subscribers = subscribers.lock().unwrap_or_else(|p| p.into_inner());
                for s in subscribers.iter_mut() {
                    if event
                        .paths
                        .iter()
                        .any(|p| s.set.matches(p) || s.links.contains(p))
                    {
                        // A flipped link may lead elsewhere now.
                        if !s.links.is_empty() {
                            s.links = s.set.links();
                        }
                        // A full channel already holds a nudge: bursts coalesce here.
                        let _ = s.nudge.try_send(());
                    }
                }
            }
        };
        let backend = match kind {
            WatcherKind::Poll => Backend::Poll,
            WatcherKind::Native => {
                match notify::RecommendedWatcher::new(handler, notify::Config::default()) {
                    Ok(w) => Backend::Native(w),
                    Err(e) => {
                        tracing::warn!(
                            "the OS file watcher cannot start ({e}); polling every {poll_interval:?} instead"
                        );
                        Backend::Poll
                    }
                }
            }
        };
        let directories = Arc::new(Mutex::new(Directories::new(backend)));
        if directories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_poll()
        {
            spawn_poller(Arc::downgrade(&subscribers), poll_interval)?;
        } else {
            spawn_follower(Arc::downgrade(&directories), wakes)?;
        }
        Ok(Self {
            directories,
            subscribers,
        })
    }

    /// Watches `set`; each change event touching it sends one nudge on the returned
    /// channel (bursts coalesce into one pending nudge). A directory that does not exist
    /// yet is watched for, and its arrival is a nudge too.
    pub fn subscribe(&self, set: WatchSet) -> Result<mpsc::Receiver<()>, WatchError> {
        let (nudge, rx) = mpsc::channel(1);
        {
            let mut directories = self.directories.lock().unwrap_or_else(|p| p.into_inner());
            for (dir, mode) in set.directories() {
                directories.watch(&dir, mode, &nudge)?;
            }
        }
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Subscriber {
                last: set.fingerprint(),
                links: set.links(),
                set,
                nudge,
            });
        Ok(rx)
    }
}

/// Follows directories not made yet down as events come, until the watcher is dropped.
/// Its own thread: adding a watch waits for notify's event thread, which must not be
/// the one asking.
fn spawn_follower(
    directories: std::sync::Weak<Mutex<Directories>>,
    wakes: std::sync::mpsc::Receiver<()>,
) -> Result<(), notify::Error> {
    std::thread::Builder::new()
        .name("baton-watch-follower".into())
        .spawn(move || {
            while wakes.recv().is_ok() {
                let Some(directories) = directories.upgrade() else {
                    return;
                };
                directories
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .descend();
            }
        })
        .map(|_| ())
        .map_err(notify::Error::io)
}

/// Checks every subscriber's fingerprint each `interval`, until the watcher is dropped.
fn spawn_poller(
    subscribers: std::sync::Weak<Mutex<Vec<Subscriber>>>,
    interval: Duration,
) -> Result<(), notify::Error> {
    std::thread::Builder::new()
        .name("baton-poll-watcher".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(subscribers) = subscribers.upgrade() else {
                    return;
                };
                let mut subscribers = subscribers.lock().unwrap_or_else(|p| p.into_inner());
                for s in subscribers.iter_mut() {
                    let now = s.set.fingerprint();
                    if now != s.last {
                        s.last = now;
                        let _ = s.nudge.try_send(());
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(notify::Error::io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_chains_name_every_link_on_the_way() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_a"))?;
        std::fs::write(d.join("..2026_a/plugin"), "x")?;
        std::os::unix::fs::symlink("..2026_a", d.join("..data"))?;
        std::os::unix::fs::symlink("..data/plugin", d.join("plugin"))?;
        let (links, resolved) = link_chain(&d.join("plugin"));
        assert_eq!(links, [d.join("plugin"), d.join("..data")]);
        assert_eq!(resolved, d.join("..2026_a/plugin"));
        // A loop ends quietly.
        std::os::unix::fs::symlink("loop", d.join("loop"))?;
        assert_eq!(link_chain(&d.join("loop")).0.len(), 40);
        Ok(())
    }

    #[test]
    fn sets_match_files_and_globs_and_watch_their_directories() {
        let set = WatchSet::new(
            Some(Path::new("/srv/bin/counter")),
            &[
                "/srv/py/*.py".to_owned(),
                "/srv/lib/**/*.py".to_owned(),
                "/etc/x.conf".to_owned(),
            ],
        );
        assert!(set.matches(Path::new("/srv/bin/counter")));
        assert!(!set.matches(Path::new("/srv/bin/counter.tmp")));
        assert!(set.matches(Path::new("/srv/py/plugin.py")));
        assert!(!set.matches(Path::new("/srv/py/plugin.pyc")));
        assert!(set.matches(Path::new("/srv/lib/a/b/c.py")));
        assert!(set.matches(Path::new("/etc/x.conf")));
        let dirs: Vec<_> = set
            .directories()
            .into_iter()
            .map(|(d, m)| (d, m == RecursiveMode::Recursive))
            .collect();
        assert!(dirs.contains(&(PathBuf::from("/srv/bin"), false)));
        assert!(dirs.contains(&(PathBuf::from("/srv/py"), false)));
        assert!(dirs.contains(&(PathBuf::from("/srv/lib"), true)));
        assert!(dirs.contains(&(PathBuf::from("/etc"), false)));
    }

    #[test]
    fn fingerprints_see_writes_renames_and_missing_files() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bin");
        std::fs::write(&file, b"one")?;
        let set = WatchSet::new(Some(&file), &[]);
        let a = set.fingerprint();
        assert_eq!(a, set.fingerprint());
        std::fs::write(dir.path().join("new"), b"two")?;
        std::fs::rename(dir.path().join("new"), &file)?;
        let b = set.fingerprint();
        assert_ne!(a, b);
        std::fs::remove_file(&file)?;
        assert_eq!(set.fingerprint().missing(), vec![file.as_path()]);
        Ok(())
    }
}
