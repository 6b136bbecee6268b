//! `query_sql`: `GET ?db=&q=&format=` and `POST` with InfluxDB's JSON body
//! `{"db", "q", "format", "params"}`, `params` bound to `$name` in the statement.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use datafusion::scalar::ScalarValue;

use super::format::Format;
use super::{Api, Params, Refusal, error, read_body};
use crate::db::StoreError;

/// One query, however it came.
struct Query {
    db: String,
    sql: String,
    format: Format,
    params: Vec<(String, ScalarValue)>,
}

fn format(name: Option<&str>) -> Result<Format, Refusal> {
    name.map_or(Ok(Format::Json), |f| {
        Format::parse(f).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))
    })
}

async fn run(api: Api, query: Query) -> Response {
    let Query {
        db,
        sql,
        format,
        params,
    } = query;
    let params = if params.is_empty() {
        crate::db::Params::None
    } else {
        crate::db::Params::Named(params)
    };
    // Dropped with the request when the client goes: the query stops with it.
    let answer = api.db.query(&db, &sql, params).await;
    match answer.map(|output| format.render(&output)) {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, format.content_type())],
            body,
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(StoreError::Database(e)) => error(StatusCode::NOT_FOUND, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `GET /api/v3/query_sql?db=&q=&format=`
pub async fn get(State(api): State<Api>, params: Params) -> Response {
    let (Some(db), Some(sql)) = (params.get("db"), params.get("q")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "db and q are required (GET /api/v3/query_sql?db=NAME&q=SQL)",
        );
    };
    let format = match format(params.get("format").map(String::as_str)) {
        Ok(f) => f,
        Err(refusal) => return refusal.into_response(),
    };
    let query = Query {
        db: db.clone(),
        sql: sql.clone(),
        format,
        params: Vec::new(),
    };
    run(api, query).await
}

/// The JSON body of `POST /api/v3/query_sql`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body_ {
    db: String,
    q: String,
    format: Option<String>,
    params: Option<HashMap<String, serde_json::Value>>,
}

/// A JSON parameter as a SQL value; a string is coerced by where it is used (a time
/// compared with `time`, say), as in InfluxDB.
pub(super) fn cell(name: &str, value: serde_json::Value) -> Result<ScalarValue, String> {
    Ok(match value {
        serde_json::Value::Null => ScalarValue::Null,
        serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(b)),
        serde_json::Value::String(s) => ScalarValue::Utf8(Some(s)),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ScalarValue::Int64(Some(i)),
            (None, Some(u)) => ScalarValue::UInt64(Some(u)),
            _ => ScalarValue::Float64(n.as_f64()),
        },
        _ => {
            return Err(format!(
                "params.{name} is not a string, number, boolean or null"
            ));
        }
    })
}

/// `POST /api/v3/query_sql` with `{"db", "q", "format", "params"}`.
pub async fn post(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let request: Body_ = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a query ({{\"db\", \"q\", \"format\", \"params\"}}): {e}"),
            );
        }
    };
    let format = match format(request.format.as_deref()) {
        Ok(f) => f,
        Err(refusal) => return refusal.into_response(),
    };
    let mut params = Vec::new();
    for (name, value) in request.params.unwrap_or_default() {
        match cell(&name, value) {
            Ok(c) => params.push((name, c)),
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    }
    let query = Query {
        db: request.db,
        sql: request.q,
        format,
        params,
    };
    run(api, query).await
}
