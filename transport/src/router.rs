//! Calls routed to gRPC services by the service's name at the head of their path
//! (`/package.Service/Method`), for [`serve`](crate::serve). tonic's `Routes` does the
//! same through an axum router, which wraps each request's body twice more and each
//! answer's once on the way (a box and an error map per layer, paid again for every
//! frame read): a few thousand instructions per call, on a server whose whole per-call
//! work is some fifty thousand. The bodies here go through as they came.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tower::{Service, ServiceExt};

type Call = dyn Fn(http::Request<Body>) -> BoxFuture<'static, Result<http::Response<Body>, Infallible>>
    + Send
    + Sync;

/// Asked about a call's headers before its service sees it: `Err` refuses the call.
pub type Check = dyn Fn(&http::HeaderMap) -> Result<(), Status> + Send + Sync;

/// gRPC services, each reached by its name; a call to any other answers `UNIMPLEMENTED`.
/// Cheap to clone (the server clones it per call).
#[derive(Clone, Default)]
pub struct Router {
    services: Arc<Vec<Route>>,
}

#[derive(Clone)]
struct Route {
    /// `/package.Service/`.
    prefix: Box<str>,
    check: Option<Arc<Check>>,
    call: Arc<Call>,
}

impl Router {
    /// No services: every call is unimplemented.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `service`, reached by calls whose path starts with its name; a second
    /// service of the same name replaces the first.
    pub fn add_service<S, B>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let prefix: Box<str> = format!("/{}/", S::NAME).into();
        let call: Arc<Call> = Arc::new(move |request| {
            let answer = service.clone().oneshot(request);
            Box::pin(async move {
                match answer.await {
                    // `Body::new` keeps a `Body` as it is and boxes any other body once.
                    Ok(response) => Ok(response.map(Body::new)),
                    Err(never) => match never {},
                }
            })
        });
        let services = Arc::make_mut(&mut self.services);
        services.retain(|r| r.prefix != prefix);
        services.push(Route {
            prefix,
            check: None,
            call,
        });
        self
    }

    /// As [`Router::add_service`], with `check` asked about each call's headers first: a
    /// call it refuses is answered with the status it gives and never reaches `service`.
    /// (tonic's interceptors do the same, at the price of a request rebuilt around its
    /// metadata and one more wrapper around every answer's body.)
    pub fn add_checked_service<S, B>(self, service: S, check: Arc<Check>) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let mut router = self.add_service(service);
        if let Some(added) = Arc::make_mut(&mut router.services).last_mut() {
            added.check = Some(check);
        }
        router
    }
}

impl Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        match self.services.iter().find(|r| path.starts_with(&*r.prefix)) {
            Some(route) => match route.check.as_ref().map(|check| check(request.headers())) {
                Some(Err(refused)) => Box::pin(std::future::ready(Ok(refused.into_http()))),
                _ => (route.call)(request),
            },
            None => {
                let status = Status::unimplemented(format!("no service here answers {path}"));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that answers every call with its own name in a header.
    #[derive(Clone)]
    struct Named<const N: u8>;

    impl<const N: u8> NamedService for Named<N> {
        const NAME: &'static str = match N {
            0 => "pkg.A",
            1 => "pkg.AB",
            _ => "pkg.A",
        };
    }

    impl<const N: u8> Service<http::Request<Body>> for Named<N> {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
            let mut response = http::Response::new(Body::empty());
            response
                .headers_mut()
                .insert("served-by", http::HeaderValue::from(u16::from(N)));
            std::future::ready(Ok(response))
        }
    }

    async fn ask(router: &Router, path: &str) -> http::Response<Body> {
        let request = http::Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("a request");
        match router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    fn header<'a>(response: &'a http::Response<Body>, name: &str) -> Option<&'a str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn calls_reach_the_service_their_path_names_and_no_other() {
        let router = Router::new()
            .add_service(Named::<0>)
            .add_service(Named::<1>);
        let a = ask(&router, "/pkg.A/Get").await;
        assert_eq!(header(&a, "served-by"), Some("0"));
        // A name that begins another's is still its own service.
        let ab = ask(&router, "/pkg.AB/Get").await;
        assert_eq!(header(&ab, "served-by"), Some("1"));

        for path in ["/pkg.ABC/Get", "/pkg.Other/Get", "/pkg.A", "/"] {
            let none = ask(&router, path).await;
            assert_eq!(header(&none, "served-by"), None, "{path}");
            assert_eq!(header(&none, "grpc-status"), Some("12"), "{path}");
            let message = header(&none, "grpc-message").unwrap_or_default();
            assert!(message.contains("no%20service"), "{path}: {message:?}");
        }
    }

    #[tokio::test]
    async fn a_checked_service_sees_only_the_calls_its_check_lets_through() {
        let check: Arc<Check> = Arc::new(|headers| match headers.get("pass") {
            Some(_) => Ok(()),
            None => Err(Status::unauthenticated("no pass")),
        });
        let router = Router::new()
            .add_checked_service(Named::<0>, check)
            .add_service(Named::<1>);
        let refused = ask(&router, "/pkg.A/Get").await;
        assert_eq!(header(&refused, "served-by"), None);
        assert_eq!(header(&refused, "grpc-status"), Some("16"));
        let request = http::Request::builder()
            .uri("/pkg.A/Get")
            .header("pass", "1")
            .body(Body::empty())
            .expect("a request");
        let Ok(passed) = router.clone().oneshot(request).await;
        assert_eq!(header(&passed, "served-by"), Some("0"));
        // The check is the one service's, not the router's.
        let other = ask(&router, "/pkg.AB/Get").await;
        assert_eq!(header(&other, "served-by"), Some("1"));
    }

    #[tokio::test]
    async fn a_second_service_of_a_name_replaces_the_first() {
        let router = Router::new()
            .add_service(Named::<0>)
            .add_service(Named::<2>);
        let a = ask(&router, "/pkg.A/Get").await;
        assert_eq!(header(&a, "served-by"), Some("2"));
    }
}
