//! A request body the host can take back as long as nothing of it has been read. A
//! typed call's request is a stream the host does not keep a copy of; when the
//! transport refuses the call before sending it (the plugin's process was gone), the
//! body is taken back whole and the call goes to the next generation, as `invoke` does.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;

#[derive(Default)]
struct State {
    body: Option<Body>,
    /// Set at the first read: from then on, part of the request may have left.
    touched: bool,
}

/// The caller's request body, shared between the host and one attempt to send it.
#[derive(Clone)]
pub(crate) struct Reclaimable {
    state: Arc<Mutex<State>>,
    /// Set once the whole request has been read: the caller has said all it will.
    finished: Arc<AtomicBool>,
}

impl Reclaimable {
    pub(crate) fn new(body: Body) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                body: Some(body),
                touched: false,
            })),
            finished: Arc::new(AtomicBool::new(false)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the whole request has been read (shared: it follows the body).
    pub(crate) fn finished(&self) -> Arc<AtomicBool> {
        self.finished.clone()
    }

    /// The body for one attempt to send the call.
    pub(crate) fn attempt(&self) -> Body {
        Body::new(self.clone())
    }

    /// Takes the body back for another attempt, if nothing of it was read; the
    /// attempt that had it then sees an empty body.
    pub(crate) fn reclaim(&self) -> Option<Self> {
        let mut state = self.state();
        if state.touched {
            return None;
        }
        let body = state.body.take()?;
        Some(Self {
            state: Arc::new(Mutex::new(State {
                body: Some(body),
                touched: false,
            })),
            finished: self.finished.clone(),
        })
    }
}

impl http_body::Body for Reclaimable {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut state = self.state();
        state.touched = true;
        let frame = match state.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        };
        let ended = match &frame {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => state
                .body
                .as_ref()
                .is_some_and(http_body::Body::is_end_stream),
            _ => false,
        };
        if ended {
            self.finished.store(true, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.state()
            .body
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.state()
            .body
            .as_ref()
            .map(http_body::Body::size_hint)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_comes_back_whole_until_it_is_read() {
        let shared = Reclaimable::new(Body::new(
            http_body_util::Full::new(Bytes::from_static(b"call")).map_err(|e| match e {}),
        ));
        let unread = shared.attempt();
        let again = shared.reclaim().expect("nothing was read");
        drop(unread);
        let read = again.attempt().collect().await.expect("the body");
        assert_eq!(read.to_bytes(), Bytes::from_static(b"call"));
        assert!(again.reclaim().is_none(), "a read body cannot come back");
    }
}
