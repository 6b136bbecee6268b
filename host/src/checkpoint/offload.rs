//! A thread and runtime of their own for reading checkpoints: a snapshot of hundreds of
//! megabytes is received, decoded and checked there, so the host's workers stay free
//! for calls to every other plugin while one plugin's state streams in.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;

/// Runs `work` on the checkpoint thread (or, if that thread cannot start, where it is
/// awaited). Dropping the returned future abandons the work.
pub(super) async fn run<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let Some(handle) = handle() else {
        return Some(work.await);
    };
    let task = handle.spawn(work);
    let abort = AbortOnDrop(task.abort_handle());
    let result = task.await.ok();
    drop(abort);
    result
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How much checkpoint threads step back: under contention for the cores, calls to
/// other plugins go first. (On Linux a thread's nice value is its own.)
const BACKGROUND_NICE: i32 = 10;

fn set_thread_nice(nice: i32) {
    // SAFETY: setpriority on this thread's own id; no memory is touched.
    unsafe {
        let tid = nix::libc::gettid();
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as u32, nice);
    }
}

/// Runs `work` (on a blocking-pool thread) at background priority, then gives the
/// thread its priority back for whatever the pool runs on it next.
pub(super) fn in_background<T>(work: impl FnOnce() -> T) -> T {
    // SAFETY: getpriority of this thread; errno is not consulted (-1 is a valid nice).
    let before =
        unsafe { nix::libc::getpriority(nix::libc::PRIO_PROCESS, nix::libc::gettid() as u32) };
    set_thread_nice(BACKGROUND_NICE);
    let result = work();
    // Lowering it back needs no privilege only if it was not raised: root may, others
    // keep the background value, which harms nothing but later blocking work's speed.
    set_thread_nice(before);
    result
}

fn handle() -> Option<Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let started = std::thread::Builder::new()
                .name("baton-checkpoints".into())
                .spawn(move || {
                    set_thread_nice(BACKGROUND_NICE);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::warn!("checkpoints share the host's workers: {e}");
                            let _ = tx.send(None);
                            return;
                        }
                    };
                    let _ = tx.send(Some(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                });
            match started {
                Ok(_) => rx.recv().ok().flatten(),
                Err(e) => {
                    tracing::warn!("checkpoints share the host's workers: {e}");
                    None
                }
            }
        })
        .clone()
}
