//! The `echo` plugin: returns every payload byte for byte. The smallest useful plugin,
//! and the baseline for measuring what the host adds to a call.

use baton_plugin_sdk::{Bytes, Description, Plugin, Status, async_trait};

struct Echo;

#[async_trait]
impl Plugin for Echo {
    fn describe(&self) -> Description {
        Description::new("echo", env!("CARGO_PKG_VERSION"))
            .method("echo", "returns the payload unchanged")
    }

    async fn invoke(&self, method: &str, payload: Bytes) -> Result<Bytes, Status> {
        match method {
            "echo" => Ok(payload),
            other => Err(Status::unimplemented(format!(
                "echo has no method {other:?} (it has echo)"
            ))),
        }
    }
}

fn main() -> std::process::ExitCode {
    baton_plugin_sdk::serve(Echo)
}
