//! What one plugin's calls on the host-services socket may hold in messages not yet
//! whole. A gRPC server keeps a request's message until its last byte has come, so a
//! plugin that starts many large messages and never finishes them would make the host
//! hold all of them (16 calls of 60 MiB each held 1 GB). Each plugin gets a budget of
//! such bytes, counted as its requests' bytes arrive and given back as each message
//! completes or its call ends; a request that would go past it is refused with
//! RESOURCE_EXHAUSTED, naming the plugin, and what it held is let go.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

use super::PluginIdentity;

/// The 5-byte prefix of every gRPC message: a compression flag, then its length.
const PREFIX: usize = 5;

/// Every plugin's bytes of unfinished messages, each held to `limit`.
pub(crate) struct Budgets {
    limit: usize,
    held: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
}

impl Budgets {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: Mutex::default(),
        })
    }

    /// What `plugin` holds now (shared by all its connections and processes).
    fn of(&self, plugin: &Arc<str>) -> Arc<AtomicUsize> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        // Entries of plugins that hold nothing and have no call open are dropped, so the
        // map does not outgrow the plugins that call at once.
        held.retain(|_, h| Arc::strong_count(h) > 1 || h.load(Ordering::Relaxed) > 0);
        held.entry(plugin.clone()).or_default().clone()
    }
}

/// Counts each request's bytes against its plugin's budget (after the token check, which
/// says whose request it is).
#[derive(Clone)]
pub(crate) struct BudgetLayer(pub(crate) Arc<Budgets>);

impl<S> tower::Layer<S> for BudgetLayer {
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Budgeted<S> {
        Budgeted {
            inner,
            budgets: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Budgeted<S> {
    inner: S,
    budgets: Arc<Budgets>,
}

impl<S> tower::Service<http::Request<Body>> for Budgeted<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(plugin) = request
            .extensions()
            .get::<PluginIdentity>()
            .map(|i| i.name.clone())
        else {
            // Refused by the token check already; nothing of it is read.
            return self.inner.call(request);
        };
        let held = self.budgets.of(&plugin);
        let limit = self.budgets.limit;
        self.inner.call(request.map(|body| {
            Body::new(Charged {
                inner: body,
                plugin,
                held,
                limit,
                counter: Messages::default(),
                charged: 0,
            })
        }))
    }
}

/// Where a request's bytes stand in its messages.
#[derive(Default)]
struct Messages {
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// The current message's length, once its prefix is whole.
    len: usize,
    /// Bytes of the current message's body still to come.
    left: usize,
}

impl Messages {
    /// How much of `data` the current message takes, up to its end.
    fn step(&self, data: &[u8]) -> usize {
        let to_end = if self.prefix_len < PREFIX {
            let need = PREFIX - self.prefix_len;
            if data.len() < need {
                return data.len();
            }
            let mut p = self.prefix;
            p[self.prefix_len..].copy_from_slice(&data[..need]);
            need + u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize
        } else {
            self.left
        };
        to_end.min(data.len())
    }

    /// Follows `data`, which goes no further than the current message's end; returns
    /// whether it ended the message.
    fn follow(&mut self, mut data: &[u8]) -> bool {
        if self.prefix_len < PREFIX {
            let take = (PREFIX - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len < PREFIX {
                return false;
            }
            let p = self.prefix;
            self.len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
            self.left = self.len;
        }
        self.left -= data.len().min(self.left);
        if self.left == 0 {
            self.prefix_len = 0;
            return true;
        }
        false
    }

    /// Bytes of the unfinished message come so far, its prefix included.
    fn unfinished(&self) -> usize {
        if self.prefix_len < PREFIX {
            self.prefix_len
        } else {
            PREFIX + self.len - self.left
        }
    }
}

/// A request body whose unfinished message's bytes are charged to its plugin.
struct Charged {
    inner: Body,
    plugin: Arc<str>,
    held: Arc<AtomicUsize>,
    limit: usize,
    counter: Messages,
    /// Bytes this request holds in the plugin's count now.
    charged: usize,
}

impl Charged {
    fn release(&mut self) {
        self.held.fetch_sub(self.charged, Ordering::AcqRel);
        self.charged = 0;
    }

    /// Charges `data`; false if the plugin would then hold more than its budget.
    fn charge(&mut self, mut data: &[u8]) -> bool {
        // Message by message: a whole one is the decoder's to hand on, and given back.
        while !data.is_empty() {
            let (now, later) = data.split_at(self.counter.step(data));
            data = later;
            if self.counter.follow(now) {
                self.release();
                continue;
            }
            let added = self.counter.unfinished().saturating_sub(self.charged);
            self.charged += added;
            if self.held.fetch_add(added, Ordering::AcqRel) + added > self.limit {
                return false;
            }
        }
        true
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.release();
    }
}

impl http_body::Body for Charged {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let within = match frame.data_ref() {
            Some(data) => {
                let data = data.clone();
                self.charge(&data)
            }
            None => true,
        };
        if !within {
            let held = self.held.load(Ordering::Acquire);
            self.release();
            return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                "plugin {}: its calls to the host services hold {held} bytes of messages not \
                 yet whole, past the {} it may: finish a message before starting more",
                self.plugin, self.limit
            )))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.resize(PREFIX + len, 7);
        m
    }

    fn charged(held: &Arc<AtomicUsize>, limit: usize) -> Charged {
        Charged {
            inner: Body::empty(),
            plugin: "p".into(),
            held: held.clone(),
            limit,
            counter: Messages::default(),
            charged: 0,
        }
    }

    #[test]
    fn only_unfinished_messages_count_and_they_are_given_back() {
        let held = Arc::new(AtomicUsize::new(0));
        let mut body = charged(&held, 1000);
        // Whole in one piece: nothing held after.
        assert!(body.charge(&message(100)));
        assert_eq!(held.load(Ordering::Relaxed), 0);
        // In pieces, a byte at a time through the prefix: held as it comes, then given back.
        let m = message(300);
        for (i, b) in m[..200].iter().enumerate() {
            assert!(body.charge(std::slice::from_ref(b)));
            assert_eq!(held.load(Ordering::Relaxed), i + 1);
        }
        assert!(body.charge(&m[200..]));
        assert_eq!(held.load(Ordering::Relaxed), 0);
        // The end of one and the start of the next in one piece: only the next is held.
        let (a, b) = (message(50), message(400));
        assert!(body.charge(&a[..10]));
        let mut joined = a[10..].to_vec();
        joined.extend_from_slice(&b[..30]);
        assert!(body.charge(&joined));
        assert_eq!(held.load(Ordering::Relaxed), 30);
        // Dropping the request gives back what it held.
        drop(body);
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_plugins_calls_share_one_budget() {
        let held = Arc::new(AtomicUsize::new(0));
        let (mut one, mut two) = (charged(&held, 1000), charged(&held, 1000));
        let m = message(800);
        assert!(one.charge(&m[..600]));
        assert!(
            two.charge(&m[..400]),
            "1000 held: at the limit, not past it"
        );
        assert!(!two.charge(&m[400..401]), "1001 would be past it");
        drop(two);
        assert_eq!(held.load(Ordering::Relaxed), 600);
        assert!(one.charge(&m[600..]));
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_plugin_holding_nothing_is_forgotten() {
        let budgets = Budgets::new(10);
        let name: Arc<str> = "gone".into();
        let held = budgets.of(&name);
        drop(held);
        let _other = budgets.of(&"other".into());
        let map = budgets.held.lock().expect("not poisoned");
        assert!(!map.contains_key(&name) && map.len() == 1);
    }
}
