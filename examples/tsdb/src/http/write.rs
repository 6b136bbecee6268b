//! Writes: `/api/v3/write_lp` (precision auto by default, `accept_partial` true by
//! default, `no_sync` accepted) and the v1 `/write` and v2 `/api/v2/write` endpoints
//! that Telegraf and the client libraries use (nanoseconds by default, all or nothing).
//! Each takes its body plain or gzip'd (`Content-Encoding`).

use std::collections::{BTreeMap, HashMap};

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::peer::Peer;
use super::{Api, Params, Refusal, encoding, error, flag, json, read_body};
use crate::db::{Db, StoreError};
use crate::host_api::by_table;
use crate::line_protocol::{self, LineError, Point, Precision};

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Line(#[from] line_protocol::LineError),
    #[error("line {line}: {what}")]
    Store { line: usize, what: String },
    #[error("{0}")]
    Other(String),
    /// The disk failed: nothing was written, and it is not the request's fault.
    #[error("{0}")]
    Storage(String),
}

/// Parses and stores line protocol in `database`: all of it, or nothing. Returns the
/// points as stored, by table.
pub async fn store(
    db: &Db,
    database: &str,
    text: &str,
    precision: Precision,
    sync: bool,
) -> Result<BTreeMap<String, Vec<crate::api::Point>>, WriteError> {
    let points = line_protocol::parse(text, precision)?;
    let lines: Vec<usize> = points.iter().map(|p| p.line).collect();
    match db
        .write(database, points, crate::line_protocol::now_ns(), sync)
        .await
    {
        Ok(points) => Ok(by_table(points)),
        Err(StoreError::Point { index, what }) => Err(WriteError::Store {
            line: lines.get(index).copied().unwrap_or(0),
            what,
        }),
        Err(e @ StoreError::Io(_)) => Err(WriteError::Storage(e.to_string())),
        Err(e) => Err(WriteError::Other(e.to_string())),
    }
}

/// One refused line, in InfluxDB's shape.
fn refused_line(text: &str, line: usize, message: &str) -> serde_json::Value {
    serde_json::json!({
        "original_line": line_protocol::line_of(text, line),
        "line_number": line,
        "error_message": message,
    })
}

/// Stores the good lines of `text` and answers with the bad ones listed, as InfluxDB
/// does for `accept_partial=true`.
async fn store_partial(
    api: &Api,
    db: &str,
    text: &str,
    precision: Precision,
    sync: bool,
    peer: Option<Peer>,
) -> Response {
    let mut bad: Vec<(usize, String)> = Vec::new();
    let mut points: Vec<Point> = Vec::new();
    for parsed in line_protocol::parse_each(text, precision) {
        match parsed {
            Ok(point) => points.push(point),
            Err(LineError { line, column, what }) => {
                bad.push((line, format!("column {column}: {what}")));
            }
        }
    }
    let lines: Vec<usize> = points.iter().map(|p| p.line).collect();
    let written = match api
        .db
        .write_partial(db, points, crate::line_protocol::now_ns(), sync)
        .await
    {
        Ok(written) => written,
        Err(e @ StoreError::Io(_)) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("nothing was written: {e}")),
    };
    bad.extend(
        written
            .refused
            .into_iter()
            .map(|(index, what)| (lines.get(index).copied().unwrap_or(0), what)),
    );
    if !written.points.is_empty() {
        let waits = api.engine.written(db, by_table(written.points), None);
        wait_for_triggers(api, waits, peer).await;
    }
    if bad.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    bad.sort_by_key(|(line, _)| *line);
    let data: Vec<serde_json::Value> = bad
        .iter()
        .map(|(line, what)| refused_line(text, *line, what))
        .collect();
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({
            "error": "partial write of line protocol occurred",
            "data": data,
        }),
    )
}

/// Stores all of `text` or nothing, and answers naming the first bad line.
async fn store_whole(
    api: &Api,
    db: &str,
    text: &str,
    precision: Precision,
    sync: bool,
    peer: Option<Peer>,
) -> Response {
    let refused = |line: usize, message: String| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({
                "error": "parsing failed for write_lp endpoint",
                "data": refused_line(text, line, &message),
            }),
        )
    };
    match store(&api.db, db, text, precision, sync).await {
        Ok(tables) => {
            let waits = api.engine.written(db, tables, None);
            wait_for_triggers(api, waits, peer).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(WriteError::Line(LineError { line, column, what })) => {
            refused(line, format!("column {column}: {what}"))
        }
        Err(WriteError::Store { line, what }) => refused(line, what),
        Err(WriteError::Other(e)) => {
            error(StatusCode::BAD_REQUEST, format!("nothing was written: {e}"))
        }
        Err(WriteError::Storage(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("nothing was written: {e}"),
        ),
    }
}

/// What each write endpoint reads from its query string.
struct Write {
    db: String,
    precision: Precision,
    accept_partial: bool,
    /// Answer once the write is in the log, before it is flushed to disk.
    no_sync: bool,
}

/// Waits until each trigger in `waits` (those with `run_async = false`) has ended its
/// call on the write's rows; each call is bounded by its trigger's call timeout. A write
/// from a trigger's own process does not wait: its trigger, or one waiting on it, may be
/// in the very call that makes it.
async fn wait_for_triggers(
    api: &Api,
    waits: Vec<tokio::sync::oneshot::Receiver<()>>,
    peer: Option<Peer>,
) {
    if waits.is_empty() {
        return;
    }
    if let Some(peer) = peer {
        let pids = api.engine.plugin_pids();
        // Off the runtime's threads: reading /proc takes milliseconds, and on this
        // thread it held back the very trigger calls this write had just queued (their
        // task woken here), so a waiting write was answered that much later.
        let held = tokio::task::spawn_blocking(move || peer.held_by_any(&pids)).await;
        if held.unwrap_or(false) {
            return;
        }
    }
    for ended in waits {
        // An error is the sender gone: the call ended (or the trigger was deleted).
        let _ = ended.await;
    }
}

async fn write(
    api: Api,
    write: Write,
    headers: HeaderMap,
    body: Body,
    peer: Option<Peer>,
) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match encoding::decoded(&headers, body).await {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    if let Err(e) = crate::db::check_database_name(&write.db) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let sync = !write.no_sync;
    if write.accept_partial {
        store_partial(&api, &write.db, text, write.precision, sync, peer).await
    } else {
        store_whole(&api, &write.db, text, write.precision, sync, peer).await
    }
}

fn precision(
    params: &HashMap<String, String>,
    default: Precision,
    parse: fn(&str) -> Option<Precision>,
    names: &str,
) -> Result<Precision, Refusal> {
    match params.get("precision") {
        None => Ok(default),
        Some(p) => parse(p).ok_or_else(|| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("precision={p:?} is not one of {names}"),
            )
        }),
    }
}

fn required(params: &HashMap<String, String>, name: &str, usage: &str) -> Result<String, Refusal> {
    params.get(name).cloned().ok_or_else(|| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("{name} is missing ({usage})"),
        )
    })
}

/// `POST /api/v3/write_lp?db=&precision=&accept_partial=&no_sync=`
pub async fn v3(
    State(api): State<Api>,
    peer: Option<Extension<Peer>>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let parsed = (|| {
        Ok::<_, Refusal>(Write {
            no_sync: flag(&params, "no_sync", false)?,
            db: required(&params, "db", "POST /api/v3/write_lp?db=NAME")?,
            precision: precision(
                &params,
                Precision::Auto,
                Precision::parse_v3,
                "auto, ns, n, nanosecond, us, u, microsecond, ms, millisecond, s, second",
            )?,
            accept_partial: flag(&params, "accept_partial", true)?,
        })
    })();
    write_parsed(api, parsed, headers, body, peer.map(|Extension(p)| p)).await
}

/// `POST /write?db=&precision=` (InfluxDB 1).
pub async fn v1(
    State(api): State<Api>,
    peer: Option<Extension<Peer>>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let parsed = (|| {
        Ok::<_, Refusal>(Write {
            db: required(&params, "db", "POST /write?db=NAME")?,
            precision: precision(
                &params,
                Precision::Nanoseconds,
                Precision::parse_v1,
                "n, ns, u, µ, ms, s, m, h",
            )?,
            accept_partial: false,
            no_sync: false,
        })
    })();
    write_parsed(api, parsed, headers, body, peer.map(|Extension(p)| p)).await
}

/// `POST /api/v2/write?bucket=&org=&precision=` (InfluxDB 2; `org` is not used).
pub async fn v2(
    State(api): State<Api>,
    peer: Option<Extension<Peer>>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let parsed = (|| {
        Ok::<_, Refusal>(Write {
            db: required(&params, "bucket", "POST /api/v2/write?bucket=NAME")?,
            precision: precision(
                &params,
                Precision::Nanoseconds,
                Precision::parse_v2,
                "ns, us, ms, s",
            )?,
            accept_partial: false,
            no_sync: false,
        })
    })();
    write_parsed(api, parsed, headers, body, peer.map(|Extension(p)| p)).await
}

/// The write each endpoint's parameters describe, or their refusal.
async fn write_parsed(
    api: Api,
    parsed: Result<Write, Refusal>,
    headers: HeaderMap,
    body: Body,
    peer: Option<Peer>,
) -> Response {
    match parsed {
        Ok(w) => write(api, w, headers, body, peer).await,
        Err(refusal) => refusal.into_response(),
    }
}
