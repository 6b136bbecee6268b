//! InfluxDB 3's token routes: the operator token made (`POST
//! /api/v3/configure/token/admin`, no token needed while there is none) and regenerated
//! (`.../admin/regenerate`, with it), named admin tokens made (`.../named_admin`
//! `{token_name, expiry_secs}`) and deleted (`DELETE /api/v3/configure/token?token_name=`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;

use super::auth::{credential, status_of};
use super::configure::body_json;
use super::{Api, Params, error, json};
use crate::tokens::{Created, TokenError};

fn made(outcome: Result<Created, TokenError>) -> Response {
    match outcome {
        Ok(created) => json(StatusCode::CREATED, &created.to_json()),
        Err(e) => refused(e),
    }
}

fn refused(e: TokenError) -> Response {
    error(status_of(&e), e.to_string())
}

/// `POST /api/v3/configure/token/admin`. Never from a browser: a web page could
/// otherwise claim the first token of a tsdb on the visitor's machine (a cross-site
/// POST, or DNS rebinding), and browsers name the page's origin on every POST.
pub async fn create_admin(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "the operator token is not made for a web page (Origin {:?}); ask with curl or a client library",
                String::from_utf8_lossy(origin.as_bytes())
                    .chars()
                    .take(64)
                    .collect::<String>()
            ),
        );
    }
    made(api.tokens.create_operator())
}

/// `POST /api/v3/configure/token/admin/regenerate`, with the operator token.
pub async fn regenerate_admin(State(api): State<Api>, headers: HeaderMap, uri: Uri) -> Response {
    match credential(&headers, &uri) {
        Ok(presented) => made(api.tokens.regenerate_operator(presented.as_deref())),
        Err(e) => error(StatusCode::UNAUTHORIZED, e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedAdmin {
    token_name: String,
    #[serde(default)]
    expiry_secs: Option<u64>,
}

/// `POST /api/v3/configure/token/named_admin` with `{token_name, expiry_secs}`.
pub async fn create_named_admin(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request: NamedAdmin = match body_json(&headers, body).await {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::BAD_REQUEST, "the JSON body is missing"),
        Err(answer) => return answer,
    };
    made(
        api.tokens
            .create_named(&request.token_name, request.expiry_secs),
    )
}

/// `DELETE /api/v3/configure/token?token_name=`
pub async fn delete(State(api): State<Api>, params: Params) -> Response {
    let Some(name) = params.get("token_name") else {
        return error(StatusCode::BAD_REQUEST, "token_name is missing");
    };
    match api.tokens.delete(name) {
        Ok(()) => json(
            StatusCode::OK,
            &serde_json::json!({ "token_name": name, "deleted": true }),
        ),
        Err(e) => refused(e),
    }
}
