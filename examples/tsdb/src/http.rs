//! The HTTP API, on InfluxDB 3's paths where it has one: `POST /api/v3/write_lp?db=NAME`
//! (line protocol; 204, or 400 naming the line and column, nothing written),
//! `GET /api/v3/query_sql?db=NAME&q=SQL` (JSON rows), `/api/v3/engine/PATH` (request
//! triggers), and the triggers' status (`GET /api/v3/configure/processing_engine_trigger`)
//! with `POST .../enable?trigger_name=NAME` and `.../disable?...`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::api::HttpRequest;
use crate::host_api::{MAX_QUERY_ROWS, by_table};
use crate::line_protocol::{self, Precision};
use crate::storage::{Cell, Storage, StoreError};
use crate::triggers::Engine;

/// The largest write or engine request body accepted.
const MAX_BODY: usize = 16 << 20;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// What the HTTP API works with.
#[derive(Clone)]
pub struct Api {
    pub storage: Storage,
    pub engine: Arc<Engine>,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Line(#[from] line_protocol::LineError),
    #[error("line {line}: {what}")]
    Store { line: usize, what: String },
    #[error("{0}")]
    Other(String),
}

/// Parses and stores line protocol in `database`: all of it, or nothing. Returns the
/// points as stored, by table.
pub async fn store(
    storage: &Storage,
    database: &str,
    text: &str,
    precision: Precision,
) -> Result<BTreeMap<String, Vec<crate::api::Point>>, WriteError> {
    let points = line_protocol::parse(text, precision)?;
    let lines: Vec<usize> = points.iter().map(|p| p.line).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let (storage, database) = (storage.clone(), database.to_owned());
    let stored = tokio::task::spawn_blocking(move || storage.write(&database, points, now))
        .await
        .map_err(|e| WriteError::Other(e.to_string()))?;
    match stored {
        Ok(points) => Ok(by_table(points)),
        Err(StoreError::Point { index, what }) => Err(WriteError::Store {
            line: lines.get(index).copied().unwrap_or(0),
            what,
        }),
        Err(e) => Err(WriteError::Other(e.to_string())),
    }
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, api: Api) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("http: accept failed: {e}");
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |r| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(route(api, r).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// Binds the API's address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

type Answer = Response<Full<Bytes>>;

fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(value.to_string())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    answer
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    json(status, &serde_json::json!({ "error": message.into() }))
}

fn query_params(request: &Request<Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|q| {
            url_decoded_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default()
}

/// `a=1&b=x%20y` as pairs, percent- and plus-decoded.
fn url_decoded_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    // Bytes, not `&s[..]`: a multi-byte character there must not panic.
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn body(request: Request<Incoming>) -> Result<Bytes, Answer> {
    Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
            )
        })
}

async fn route(api: Api, request: Request<Incoming>) -> Answer {
    let path = request.uri().path().to_owned();
    let params = query_params(&request);
    match (request.method().clone(), path.as_str()) {
        (Method::POST, "/api/v3/write_lp") => write(api, params, request).await,
        (Method::GET, "/api/v3/query_sql") => query(api, params).await,
        (Method::GET, "/api/v3/configure/processing_engine_trigger") => json(
            StatusCode::OK,
            &serde_json::to_value(api.engine.status()).unwrap_or_default(),
        ),
        (Method::POST, "/api/v3/configure/processing_engine_trigger/enable")
        | (Method::POST, "/api/v3/configure/processing_engine_trigger/disable") => {
            let enable = path.ends_with("/enable");
            let Some(name) = params.get("trigger_name") else {
                return error(StatusCode::BAD_REQUEST, "trigger_name is missing");
            };
            if api.engine.set_enabled(name, enable) {
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "trigger": name, "enabled": enable }),
                )
            } else {
                error(StatusCode::NOT_FOUND, format!("no trigger named {name:?}"))
            }
        }
        (method, p) if p.starts_with("/api/v3/engine/") => {
            let sub = p.trim_start_matches("/api/v3/engine/").to_owned();
            engine_request(api, method, sub, params, request).await
        }
        _ => error(StatusCode::NOT_FOUND, format!("no route for {path}")),
    }
}

async fn write(api: Api, params: HashMap<String, String>, request: Request<Incoming>) -> Answer {
    let Some(db) = params.get("db") else {
        return error(
            StatusCode::BAD_REQUEST,
            "db is missing (POST /api/v3/write_lp?db=NAME)",
        );
    };
    let precision = match params.get("precision").map(String::as_str) {
        None => Precision::Nanoseconds,
        Some(p) => match Precision::parse(p) {
            Some(p) => p,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("precision {p:?} is not one of ns, us, ms, s"),
                );
            }
        },
    };
    let body = match body(request).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    match store(&api.storage, db, text, precision).await {
        Ok(tables) => {
            api.engine.written(db, &tables, None);
            let mut answer = Response::new(Full::new(Bytes::new()));
            *answer.status_mut() = StatusCode::NO_CONTENT;
            answer
        }
        Err(WriteError::Line(e)) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({
                "error": format!("nothing was written: {e}"),
                "line": e.line,
                "column": e.column,
            }),
        ),
        Err(WriteError::Store { line, what }) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({
                "error": format!("nothing was written: line {line}: {what}"),
                "line": line,
            }),
        ),
        Err(WriteError::Other(e)) => {
            error(StatusCode::BAD_REQUEST, format!("nothing was written: {e}"))
        }
    }
}

async fn query(api: Api, params: HashMap<String, String>) -> Answer {
    let (Some(db), Some(sql)) = (params.get("db"), params.get("q")) else {
        return error(StatusCode::BAD_REQUEST, "db and q are required");
    };
    let (storage, db, sql) = (api.storage.clone(), db.clone(), sql.clone());
    let rows =
        tokio::task::spawn_blocking(move || storage.query(&db, &sql, Vec::new(), MAX_QUERY_ROWS))
            .await;
    match rows {
        Ok(Ok(rows)) => {
            let objects: Vec<serde_json::Value> = rows
                .rows
                .into_iter()
                .map(|cells| {
                    let object: serde_json::Map<String, serde_json::Value> = rows
                        .names
                        .iter()
                        .cloned()
                        .zip(cells.into_iter().map(|c| match c {
                            Cell::Null => serde_json::Value::Null,
                            Cell::Integer(i) => i.into(),
                            Cell::Real(r) => r.into(),
                            Cell::Text(t) => t.into(),
                        }))
                        .collect();
                    serde_json::Value::Object(object)
                })
                .collect();
            json(StatusCode::OK, &serde_json::Value::Array(objects))
        }
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn engine_request(
    api: Api,
    method: Method,
    path: String,
    query: HashMap<String, String>,
    request: Request<Incoming>,
) -> Answer {
    let headers = request
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = match body(request).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let call = HttpRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query.into_iter().collect(),
        headers,
        body: body.to_vec(),
        ..HttpRequest::default()
    };
    match api.engine.request(&path, call).await {
        None => error(
            StatusCode::NOT_FOUND,
            format!("no request trigger serves {path:?}"),
        ),
        Some(Ok(reply)) => {
            let status = match reply.status {
                0 => StatusCode::OK,
                s => StatusCode::from_u16(u16::try_from(s).unwrap_or(500))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            };
            let mut answer = Response::new(Full::new(Bytes::from(reply.body)));
            *answer.status_mut() = status;
            for (k, v) in reply.headers {
                if let (Ok(k), Ok(v)) = (
                    hyper::header::HeaderName::from_bytes(k.as_bytes()),
                    hyper::header::HeaderValue::from_str(&v),
                ) {
                    answer.headers_mut().insert(k, v);
                }
            }
            answer
        }
        Some(Err(status)) => error(
            StatusCode::BAD_GATEWAY,
            format!(
                "the plugin failed: {:?}: {}",
                status.code(),
                status.message()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded_without_trusting_them() {
        let pairs = url_decoded_pairs("q=SELECT%20*+FROM%20cpu&db=m%E2%82%AC&bad=%zz%&x=%é1");
        assert_eq!(pairs[0], ("q".into(), "SELECT * FROM cpu".into()));
        assert_eq!(pairs[1], ("db".into(), "m€".into()));
        assert_eq!(pairs[2], ("bad".into(), "%zz%".into()));
        assert_eq!(pairs[3].0, "x");
    }
}
