//! The processing engine's routes (triggers' status, enable and disable, request
//! triggers under `/api/v3/engine/PATH`) and the liveness routes `/health` and `/ping`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Api, Params, error, json, read_body};
use crate::api::HttpRequest;

/// The version `/ping` reports, and its process id (one per start, as InfluxDB's).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /health`: InfluxDB 3's plain `OK`.
pub async fn health() -> &'static str {
    "OK"
}

/// `GET /ping`: InfluxDB 3's JSON and version headers.
pub async fn ping() -> Response {
    let body = serde_json::json!({
        "version": VERSION,
        "revision": "tsdb",
        "process_id": std::process::id().to_string(),
    });
    let mut answer = json(StatusCode::OK, &body);
    let headers = answer.headers_mut();
    headers.insert(
        "x-influxdb-version",
        axum::http::HeaderValue::from_static(VERSION),
    );
    headers.insert(
        "x-influxdb-build",
        axum::http::HeaderValue::from_static("tsdb"),
    );
    answer
}

/// `GET /api/v3/configure/processing_engine_trigger`
pub async fn triggers(State(api): State<Api>) -> Response {
    json(
        StatusCode::OK,
        &serde_json::to_value(api.engine.status()).unwrap_or_default(),
    )
}

async fn set_enabled(api: &Api, params: &Params, enable: bool) -> Response {
    let Some(name) = params.get("trigger_name") else {
        return error(StatusCode::BAD_REQUEST, "trigger_name is missing");
    };
    let db = params.get("db").map(String::as_str);
    match api.processing.set_enabled(db, name, enable).await {
        Ok(()) => json(
            StatusCode::OK,
            &serde_json::json!({ "trigger": name, "enabled": enable }),
        ),
        Err(refused) => error(refused.0, refused.1),
    }
}

/// `POST /api/v3/configure/processing_engine_trigger/enable?db=&trigger_name=`
pub async fn enable(State(api): State<Api>, params: Params) -> Response {
    set_enabled(&api, &params, true).await
}

/// `POST /api/v3/configure/processing_engine_trigger/disable?db=&trigger_name=`
pub async fn disable(State(api): State<Api>, params: Params) -> Response {
    set_enabled(&api, &params, false).await
}

/// The request's headers as a plugin gets them: without the caller's credentials. Every
/// call here carries an admin token; a plugin that got it could do anything an admin
/// can (upload a plugin, make a trigger), whatever its own bounds.
fn plugin_headers(headers: &HeaderMap) -> std::collections::HashMap<String, String> {
    headers
        .iter()
        .filter(|(k, _)| {
            *k != axum::http::header::AUTHORIZATION && *k != axum::http::header::PROXY_AUTHORIZATION
        })
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// Any method on `/api/v3/engine/PATH`: the request trigger serving PATH answers.
pub async fn request(
    State(api): State<Api>,
    Path(path): Path<String>,
    method: Method,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let call = HttpRequest {
        method: method.to_string(),
        path: path.clone(),
        query: params.0.into_iter().collect(),
        headers: plugin_headers(&headers),
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
                s => u16::try_from(s)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            };
            let mut answer = (status, reply.body).into_response();
            for (k, v) in reply.headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    axum::http::HeaderValue::from_str(&v),
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
