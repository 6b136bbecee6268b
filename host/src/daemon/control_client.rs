//! A Rust program's client of a daemon's control socket: `Invoke` made by hand
//! (`baton_transport::UnixClient::unary_message`), so that the first hop of a call
//! through the daemon costs what the daemon's own call to the plugin costs, and the
//! generated `Supervisor` client, on the same connection, for everything else.

use std::path::Path;
use std::time::Duration;

use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{InvokeRequest, InvokeResponse};
use baton_transport::UnixClient;
use tonic::Status;
use tonic::codegen::http::{HeaderMap, HeaderName, Uri};

use crate::daemon::invoke_size::ALLOWANCE;
use crate::io::message_limit::MAX_MESSAGE_BYTES;

/// `Invoke`'s path, with the origin HTTP/2 wants.
static INVOKE_URI: std::sync::LazyLock<Uri> =
    std::sync::LazyLock::new(|| Uri::from_static("http://baton/baton.host.v1.Supervisor/Invoke"));

/// A connection to a daemon's control socket. Cheap to clone: clones share it.
#[derive(Clone, Debug)]
pub struct ControlClient {
    inner: UnixClient,
    max_message: usize,
    timeout: Option<Duration>,
}

impl ControlClient {
    /// Connects to the control socket at `path`, once, at once: a missing or dead daemon
    /// is reported here. Later calls reconnect by themselves.
    pub async fn connect(path: &Path) -> Result<Self, std::io::Error> {
        let inner = UnixClient::new(path);
        inner
            .connect()
            .await
            .map_err(|e| std::io::Error::other(format!("{}: {}", path.display(), e.0)))?;
        Ok(Self {
            inner,
            max_message: MAX_MESSAGE_BYTES + ALLOWANCE,
            timeout: None,
        })
    }

    /// The largest answer taken (requests are the daemon's to judge); by default the
    /// host's default `max_message_bytes` and room around it.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// A deadline each call carries (`grpc-timeout`): the daemon gives up on the call
    /// when it passes, and the caller gets DEADLINE_EXCEEDED.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Calls `request.method` of `request.plugin` through the daemon, with the same
    /// outcomes as the generated client's `invoke`.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse, Status> {
        let mut headers = HeaderMap::with_capacity(3);
        if let Some(timeout) = self.timeout {
            headers.insert(
                HeaderName::from_static("grpc-timeout"),
                baton_transport::grpc_timeout_value(timeout),
            );
        }
        // Any request goes: the daemon judges its size against its plugin's limit,
        // naming the plugin and counting the call, which a refusal here could not.
        self.inner
            .unary_message(
                INVOKE_URI.clone(),
                headers,
                &request,
                usize::MAX,
                self.max_message,
            )
            .await
    }

    /// Whether a failed call provably never reached the daemon, so that sending it again
    /// cannot run it twice: the daemon could not be reached, or it died (a restart, say)
    /// with the request still unread in its socket. Any other failure may have run the
    /// call.
    pub fn never_reached(status: &Status) -> bool {
        crate::calls::handle::never_sent(status)
    }

    /// The generated client on this connection, for the rest of the control API.
    pub fn supervisor(&self) -> SupervisorClient<UnixClient> {
        SupervisorClient::new(self.inner.clone())
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::{UnixListener, UnixStream};

    use super::*;

    /// Bytes waiting to be read on `socket`.
    fn unread_bytes(socket: &UnixStream) -> usize {
        let mut n: nix::libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which outlives the call.
        let rc = unsafe { nix::libc::ioctl(socket.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        usize::try_from(n).unwrap_or(0)
    }

    fn drain(socket: &mut UnixStream) {
        let mut buf = vec![0u8; 1 << 16];
        while unread_bytes(socket) > 0 {
            let _ = socket.read(&mut buf).expect("read");
        }
    }

    /// A call to a "daemon" that takes the connection and never answers; it closes its
    /// end once the request is in, after reading it if `read_it`.
    async fn call_a_daemon_that_dies(read_it: bool) -> Status {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("baton.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let client = ControlClient::connect(&path).await.expect("connect");
        let (mut daemon, _) = listener.accept().expect("accepted");
        drain(&mut daemon);
        let call = tokio::spawn(async move {
            client
                .invoke(InvokeRequest {
                    plugin: "p".into(),
                    method: "m".into(),
                    ..Default::default()
                })
                .await
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while unread_bytes(&daemon) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the request never came"
            );
            tokio::task::yield_now().await;
        }
        if read_it {
            drain(&mut daemon);
        }
        drop(daemon);
        call.await.expect("joined").expect_err("no answer")
    }

    #[tokio::test]
    async fn a_call_the_daemon_died_without_reading_never_reached_it() {
        let status = call_a_daemon_that_dies(false).await;
        assert!(ControlClient::never_reached(&status), "{status:?}");
        let status = call_a_daemon_that_dies(true).await;
        assert!(!ControlClient::never_reached(&status), "{status:?}");
    }
}
