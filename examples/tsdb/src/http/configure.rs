//! InfluxDB 3's configure routes: triggers made and deleted
//! (`/api/v3/configure/processing_engine_trigger`), databases
//! (`/api/v3/configure/database`), tables deleted (`/api/v3/configure/table`) and plugin files uploaded (`/api/v3/plugins/files`,
//! `/api/v3/plugins/directory`). Each checks the whole request before it changes
//! anything, and answers a 4xx naming the field it refuses.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Api, Params, error, flag, json, read_body};
use crate::plugin_dir::{MAX_FILE, MAX_FILES, Upload, checked_name};
use crate::processing_engine::{CreateTrigger, Refused};

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// The JSON body as `T`; an empty body is `None`.
pub(super) async fn body_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<T>, Response> {
    let bytes = read_body(headers, body)
        .await
        .map_err(IntoResponse::into_response)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // The path says which field is wrong: `trigger_arguments.x: invalid type ...`.
    let mut reader = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut reader)
        .map(Some)
        .map_err(|e| {
            let at = e.path().to_string();
            let field = if at == "." {
                "the JSON body".to_owned()
            } else {
                at
            };
            error(StatusCode::BAD_REQUEST, format!("{field}: {}", e.inner()))
        })
}

fn ok(value: serde_json::Value) -> Response {
    json(StatusCode::OK, &value)
}

/// `POST /api/v3/configure/processing_engine_trigger` with InfluxDB's JSON.
pub async fn create_trigger(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let request: CreateTrigger = match body_json(&headers, body).await {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::BAD_REQUEST, "the JSON body is missing"),
        Err(answer) => return answer,
    };
    let name = request.trigger_name.clone();
    match api.processing.create_trigger(request).await {
        Ok(()) => ok(serde_json::json!({ "trigger_name": name, "created": true })),
        Err(refused) => refused.into_response(),
    }
}

/// Where `DELETE` finds its parameters: the query string, as InfluxDB's client sends
/// them, or a JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteTrigger {
    db: Option<String>,
    trigger_name: Option<String>,
    #[serde(default)]
    force: bool,
}

/// `DELETE /api/v3/configure/processing_engine_trigger?db=&trigger_name=&force=`
pub async fn delete_trigger(
    State(api): State<Api>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let from_body: DeleteTrigger = match body_json(&headers, body).await {
        Ok(b) => b.unwrap_or_default(),
        Err(answer) => return answer,
    };
    let force = match flag(&params, "force", from_body.force) {
        Ok(f) => f,
        Err(refusal) => return refusal.into_response(),
    };
    let (Some(db), Some(name)) = (
        params.get("db").cloned().or(from_body.db),
        params
            .get("trigger_name")
            .cloned()
            .or(from_body.trigger_name),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "db and trigger_name are both needed",
        );
    };
    match api.processing.delete_trigger(&db, &name, force).await {
        Ok(()) => ok(serde_json::json!({ "trigger_name": name, "deleted": true })),
        Err(refused) => refused.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateDatabase {
    db: String,
}

/// `POST /api/v3/configure/database` with `{"db": NAME}`.
pub async fn create_database(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let request: CreateDatabase = match body_json(&headers, body).await {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::BAD_REQUEST, "db: the JSON body is missing"),
        Err(answer) => return answer,
    };
    match api.processing.create_database(&request.db).await {
        Ok(()) => ok(serde_json::json!({ "db": request.db, "created": true })),
        Err(refused) => refused.into_response(),
    }
}

/// `GET /api/v3/configure/database?format=json`: InfluxDB's `SHOW DATABASES` rows.
pub async fn list_databases(State(api): State<Api>, params: Params) -> Response {
    if let Some(format) = params.get("format").filter(|f| *f != "json") {
        return error(
            StatusCode::BAD_REQUEST,
            format!("format={format:?}: only json is served here"),
        );
    }
    let rows: Vec<serde_json::Value> = api
        .processing
        .catalog()
        .state()
        .databases
        .iter()
        .map(|db| serde_json::json!({ "iox::database": db }))
        .collect();
    ok(serde_json::Value::Array(rows))
}

/// `DELETE /api/v3/configure/database?db=`
pub async fn delete_database(State(api): State<Api>, params: Params) -> Response {
    let Some(db) = params.get("db") else {
        return error(StatusCode::BAD_REQUEST, "db is missing");
    };
    match api.processing.delete_database(db, &api.db).await {
        Ok(()) => ok(serde_json::json!({ "db": db, "deleted": true })),
        Err(refused) => refused.into_response(),
    }
}

/// `DELETE /api/v3/configure/table?db=&table=`: the table and its data.
pub async fn delete_table(State(api): State<Api>, params: Params) -> Response {
    let (Some(db), Some(table)) = (params.get("db"), params.get("table")) else {
        return error(
            StatusCode::BAD_REQUEST,
            if params.contains_key("db") {
                "table is missing"
            } else {
                "db is missing"
            },
        );
    };
    if !api.db.has_table(db, table) {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "table: database {db:?} has no table {:?}",
                table.chars().take(64).collect::<String>()
            ),
        );
    }
    match api.db.drop_data(db, Some(table)).await {
        Ok(_) => ok(serde_json::json!({ "db": db, "table": table, "deleted": true })),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("table {table:?} of {db:?} not deleted: {e}"),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginFile {
    plugin_name: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginDirectory {
    plugin_name: String,
    files: Vec<DirectoryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    relative_path: String,
    content: String,
}

fn no_plugin_dir() -> Response {
    error(
        StatusCode::CONFLICT,
        "tsdb has no plugin directory (start it with --plugin-dir or set plugin_dir in tsdb.toml)",
    )
}

/// `POST|PUT /api/v3/plugins/files` with `{plugin_name, content}`: one file, written
/// whole into the plugin directory.
pub async fn upload_file(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let request: PluginFile = match body_json(&headers, body).await {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::BAD_REQUEST, "the JSON body is missing"),
        Err(answer) => return answer,
    };
    let Some(dir) = api.processing.plugin_dir() else {
        return no_plugin_dir();
    };
    match dir.put(
        &request.plugin_name,
        request.content.as_bytes(),
        "plugin_name",
    ) {
        Ok(()) => ok(serde_json::json!({ "plugin_name": request.plugin_name })),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `PUT /api/v3/plugins/directory` with `{plugin_name, files: [{relative_path,
/// content}]}`: every name and size, and the whole upload against the directory, is
/// checked before the first file is written.
pub async fn upload_directory(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let request: PluginDirectory = match body_json(&headers, body).await {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::BAD_REQUEST, "the JSON body is missing"),
        Err(answer) => return answer,
    };
    let Some(dir) = api.processing.plugin_dir() else {
        return no_plugin_dir();
    };
    if request.files.is_empty() || request.files.len() > MAX_FILES {
        return error(
            StatusCode::BAD_REQUEST,
            format!("files: 1 to {MAX_FILES} files, not {}", request.files.len()),
        );
    }
    if let Err(e) = checked_name(&request.plugin_name, "plugin_name") {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let mut names = Vec::new();
    for (i, file) in request.files.iter().enumerate() {
        let field = format!("files[{i}].relative_path");
        if let Err(e) = checked_name(&file.relative_path, &field) {
            return error(StatusCode::BAD_REQUEST, e);
        }
        if file.content.len() > MAX_FILE {
            return error(
                StatusCode::BAD_REQUEST,
                format!("files[{i}].content: larger than {MAX_FILE} bytes"),
            );
        }
        names.push((
            format!("{}/{}", request.plugin_name, file.relative_path),
            field,
        ));
    }
    // The joined names are checked again, together and against the disk, before
    // anything is written: parts that pass apart may not pass joined.
    let uploads: Vec<Upload<'_>> = names
        .iter()
        .zip(&request.files)
        .map(|((name, field), file)| Upload {
            name,
            content: file.content.as_bytes(),
            field,
        })
        .collect();
    if let Err(e) = dir.put_all(&uploads) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    ok(serde_json::json!({ "plugin_name": request.plugin_name, "files": names.len() }))
}
