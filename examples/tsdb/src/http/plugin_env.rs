//! InfluxDB 3's plugin-development routes: the plugins' environment filled with pip
//! (`/api/v3/configure/plugin_environment/install_packages`, `install_requirements`)
//! and a plugin run once on given input without writing (`/api/v3/plugin_test/wal`,
//! `/schedule`). Each answers a 400 naming the field it refuses.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::configure::body_json;
use super::{Api, error, json};
use crate::plugin_env::EnvError;
use crate::plugin_test::{ScheduleTest, WalTest};
use crate::processing_engine::Refused;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallPackages {
    packages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequirements {
    requirements_location: String,
}

fn env_error(e: EnvError) -> Response {
    match e {
        EnvError::Refused(m) => error(StatusCode::BAD_REQUEST, m),
        EnvError::Failed(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// The JSON body as `T`, a missing one refused.
async fn required<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Response> {
    match body_json(headers, body).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(error(StatusCode::BAD_REQUEST, "the JSON body is missing")),
        Err(answer) => Err(answer),
    }
}

/// `POST /api/v3/configure/plugin_environment/install_packages` `{"packages": [..]}`.
pub async fn install_packages(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let request: InstallPackages = match required(&headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let envs = &api.processing.runner().envs;
    match envs.install_packages(&request.packages).await {
        Ok(env) => json(
            StatusCode::OK,
            &json!({ "environment": env.to_string_lossy(), "installed": request.packages }),
        ),
        Err(e) => env_error(e),
    }
}

/// `POST /api/v3/configure/plugin_environment/install_requirements`
/// `{"requirements_location": PATH}`, a file in the plugin directory.
pub async fn install_requirements(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request: InstallRequirements = match required(&headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let Some(dir) = api.processing.plugin_dir() else {
        return error(
            StatusCode::BAD_REQUEST,
            "requirements_location: tsdb has no plugin directory (start it with --plugin-dir or set plugin_dir in tsdb.toml)",
        );
    };
    let file = match dir.resolve(&request.requirements_location, "requirements_location") {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match api
        .processing
        .runner()
        .envs
        .install_requirements(&file)
        .await
    {
        Ok(env) => json(
            StatusCode::OK,
            &json!({ "environment": env.to_string_lossy(), "requirements_location": request.requirements_location }),
        ),
        Err(e) => env_error(e),
    }
}

/// `POST /api/v3/plugin_test/wal`: InfluxDB's `{log_lines, database_writes, errors}`.
pub async fn test_wal(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let request: WalTest = match required(&headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let processing = &api.processing;
    match api
        .plugin_tests
        .wal(
            &api.db,
            processing.plugin_dir(),
            processing.runner(),
            request,
        )
        .await
    {
        Ok(answer) => json(StatusCode::OK, &json!(answer)),
        Err(Refused(status, m)) => error(status, m),
    }
}

/// `POST /api/v3/plugin_test/schedule`: the same, with `trigger_time`.
pub async fn test_schedule(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let request: ScheduleTest = match required(&headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let processing = &api.processing;
    match api
        .plugin_tests
        .schedule(
            &api.db,
            processing.plugin_dir(),
            processing.runner(),
            request,
        )
        .await
    {
        Ok((at, answer)) => {
            let mut value = json!(answer);
            value["trigger_time"] = json!(at);
            json(StatusCode::OK, &value)
        }
        Err(refused) => refused.into_response(),
    }
}
