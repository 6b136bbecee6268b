//! The HTTP API, on InfluxDB 3's paths: the route table is here, each route a thin call
//! into `write`, `query` or `engine`, which call the storage and the trigger engine;
//! Arrow Flight (`flight`) is served on the same port, each connection by `connection`.
//! The server's bounds (connections, header and body time, body size) are here too.

mod auth;
mod configure;
mod connection;
mod encoding;
mod engine;
mod flight;
mod format;
mod peer;
mod plugin_env;
mod query;
mod tokens;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::db::Db;
use crate::triggers::Engine;

pub use write::{WriteError, store};

/// The largest request body accepted (a write, a query, an engine request).
pub const MAX_BODY: usize = 16 << 20;
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection that has not sent a whole request head this long after opening (or, on
/// HTTP/1, after its last answer) is closed: idle and trickling clients cannot hold the
/// cap. HTTP/2's bounds are in `connection`.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The time a client has to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after a failed accept, and how often such failures are logged.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

/// What the HTTP API works with.
#[derive(Clone)]
pub struct Api {
    pub db: Db,
    pub engine: Arc<Engine>,
    pub processing: Arc<crate::processing_engine::ProcessingEngine>,
    /// The caches of plugin tests, by their `cache_name`.
    pub plugin_tests: Arc<crate::plugin_test::PluginTests>,
    /// The admin tokens, and whether requests must carry one.
    pub tokens: Arc<crate::tokens::Tokens>,
}

/// The query string's parameters.
type Params = axum::extract::Query<HashMap<String, String>>;

/// The route table. A wrong method is answered 405 with `Allow` by the router.
fn routes(api: Api) -> Router {
    Router::new()
        .route("/api/v3/write_lp", post(write::v3))
        .route("/write", post(write::v1))
        .route("/api/v2/write", post(write::v2))
        .route("/api/v3/query_sql", get(query::get).post(query::post))
        .route("/health", get(engine::health))
        .route("/ping", get(engine::ping))
        .route(
            "/api/v3/configure/processing_engine_trigger",
            get(engine::triggers)
                .post(configure::create_trigger)
                .delete(configure::delete_trigger),
        )
        .route(
            "/api/v3/configure/database",
            get(configure::list_databases)
                .post(configure::create_database)
                .delete(configure::delete_database),
        )
        .route(
            "/api/v3/configure/table",
            axum::routing::delete(configure::delete_table),
        )
        .route(
            "/api/v3/plugins/files",
            post(configure::upload_file).put(configure::upload_file),
        )
        .route(
            "/api/v3/plugins/directory",
            put(configure::upload_directory),
        )
        .route(
            "/api/v3/configure/processing_engine_trigger/enable",
            post(engine::enable),
        )
        .route(
            "/api/v3/configure/processing_engine_trigger/disable",
            post(engine::disable),
        )
        .route(
            "/api/v3/configure/plugin_environment/install_packages",
            post(plugin_env::install_packages),
        )
        .route(
            "/api/v3/configure/plugin_environment/install_requirements",
            post(plugin_env::install_requirements),
        )
        .route("/api/v3/configure/token/admin", post(tokens::create_admin))
        .route(
            "/api/v3/configure/token/admin/regenerate",
            post(tokens::regenerate_admin),
        )
        .route(
            "/api/v3/configure/token/named_admin",
            post(tokens::create_named_admin),
        )
        .route(
            "/api/v3/configure/token",
            axum::routing::delete(tokens::delete),
        )
        .route("/api/v3/plugin_test/wal", post(plugin_env::test_wal))
        .route(
            "/api/v3/plugin_test/schedule",
            post(plugin_env::test_schedule),
        )
        .route(
            "/api/v3/engine/{*path}",
            axum::routing::any(engine::request),
        )
        .fallback(no_route)
        .with_state(api)
}

async fn no_route(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

/// Serves the API (HTTP/1.1 and HTTP/2, with Arrow Flight over gRPC) on `listener`
/// until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, api: Api) {
    let services = connection::Services {
        flight: flight::service(api.db.clone()),
        tokens: api.tokens.clone(),
        router: routes(api),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut last_logged: Option<tokio::time::Instant> = None;
    let mut unlogged = 0u64;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // An accept error (EMFILE, say) comes back at once while its cause
                // lasts: retrying at once would spin and flood the log.
                unlogged += 1;
                if last_logged.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY) {
                    tracing::warn!(
                        "http: accept failed ({unlogged} times since the last line): {e}"
                    );
                    last_logged = Some(tokio::time::Instant::now());
                    unlogged = 0;
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let services = services.clone();
        tokio::spawn(async move {
            connection::serve(stream, services).await;
            drop(permit);
        });
    }
}

/// Binds the API's address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// A request refused before any work: its status and why.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// The body, at most `MAX_BODY` bytes within `BODY_TIMEOUT`; a declared length over the
/// limit is refused before a byte of it is read.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        )),
        Err(_) => Err(Refusal(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {BODY_TIMEOUT:?}"),
        )),
    }
}

/// A yes/no query parameter: absent is `default`.
fn flag(params: &HashMap<String, String>, name: &str, default: bool) -> Result<bool, Refusal> {
    match params.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("{name}={other:?} is not true or false"),
        )),
    }
}
