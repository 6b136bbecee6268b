//! The `notes` plugin: named notes kept in the host's key-value store (through the host
//! services), not in the process. It keeps no state of its own, so a reload or a crash
//! loses nothing: the next generation reads the same store. Each saved note is logged
//! through the host and announced as a `plugin:note_saved` event.

use baton_plugin_sdk::{Bytes, Description, HostClient, LogLevel, Plugin, Status, async_trait};
use tokio::sync::OnceCell;

#[derive(Default)]
struct Notes {
    /// Connected on first use: the SDK's runtime is not running yet when `main` builds
    /// the plugin.
    host: OnceCell<HostClient>,
}

impl Notes {
    async fn host(&self) -> Result<&HostClient, Status> {
        Ok(self.host.get_or_try_init(HostClient::from_env).await?)
    }

    async fn put(&self, payload: &[u8]) -> Result<Bytes, Status> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| Status::invalid_argument("put takes KEY=VALUE as UTF-8 text"))?;
        let Some((key, value)) = text.split_once('=') else {
            return Err(Status::invalid_argument(format!(
                "put takes KEY=VALUE, got {text:?}"
            )));
        };
        let host = self.host().await?;
        host.kv_put(key, value.to_owned()).await?;
        let bytes = value.len().to_string();
        host.log(
            LogLevel::Info,
            "note saved",
            [("key", key), ("bytes", bytes.as_str())],
        )
        .await?;
        host.emit_event("note_saved", format!("note {key:?} saved ({bytes} bytes)"))
            .await?;
        Ok(Bytes::from_static(b"ok"))
    }

    async fn get(&self, key: &str) -> Result<Bytes, Status> {
        self.host()
            .await?
            .kv_get(key)
            .await?
            .ok_or_else(|| Status::not_found(format!("no note {key:?}")))
    }

    async fn delete(&self, key: &str) -> Result<Bytes, Status> {
        if self.host().await?.kv_delete(key).await? {
            Ok(Bytes::from_static(b"deleted"))
        } else {
            Err(Status::not_found(format!("no note {key:?}")))
        }
    }

    async fn list(&self, prefix: &str) -> Result<Bytes, Status> {
        let keys = self.host().await?.kv_list(prefix).await?;
        Ok(keys.join("\n").into())
    }
}

fn text(payload: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(payload).map_err(|_| Status::invalid_argument("the key is not UTF-8"))
}

#[async_trait]
impl Plugin for Notes {
    fn describe(&self) -> Description {
        Description::new("notes", env!("CARGO_PKG_VERSION"))
            .method("put", "KEY=VALUE: saves a note in the host's store")
            .method("get", "KEY: the note's text")
            .method("delete", "KEY: removes the note")
            .method("list", "PREFIX: the keys starting with it, one a line")
    }

    async fn invoke(&self, method: &str, payload: Bytes) -> Result<Bytes, Status> {
        match method {
            "put" => self.put(&payload).await,
            "get" => self.get(text(&payload)?).await,
            "delete" => self.delete(text(&payload)?).await,
            "list" => self.list(text(&payload)?).await,
            other => Err(Status::unimplemented(format!(
                "notes has no method {other:?} (it has put, get, delete, list)"
            ))),
        }
    }
}

fn main() -> std::process::ExitCode {
    baton_plugin_sdk::serve(Notes::default())
}
