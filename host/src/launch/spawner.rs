//! The one long-lived thread that forks plugin processes.

use tokio::process::Child;
use tokio::sync::oneshot;

use super::StartError;

/// Forks plugin processes from one long-lived thread.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
/// process; tokio's blocking threads come and go, so forking from them would kill
/// healthy plugins. This thread lives as long as the host.
#[derive(Clone)]
pub struct Spawner {
    tx: std::sync::mpsc::Sender<SpawnRequest>,
}

type SpawnJob = Box<dyn FnOnce() -> Result<Child, StartError> + Send>;
type SpawnRequest = (SpawnJob, oneshot::Sender<Result<Child, StartError>>);

impl Spawner {
    /// Starts the spawner thread, bound to the current tokio runtime.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("baton-spawner".into())
            .spawn(move || {
                // Child reaping is driven by the runtime's signal handling.
                let _guard = runtime.enter();
                while let Ok((job, reply)) = rx.recv() {
                    let _ = reply.send(job());
                }
            })?;
        Ok(Self { tx })
    }

    /// Runs `job` (which forks) on the spawner thread. Copying a binary happens there
    /// too: a fork while another thread holds the copy open for writing would make
    /// the exec of that copy fail with ETXTBSY.
    pub(super) async fn run(&self, job: SpawnJob) -> Result<Child, StartError> {
        let (reply, result) = oneshot::channel();
        let gone = || StartError::Handshake("the host's spawner thread has stopped".into());
        self.tx.send((job, reply)).map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}
