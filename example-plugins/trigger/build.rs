//! Compiles the application API with protox (no system protoc), and keeps its encoded
//! descriptors for the plugin's reflection service.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let file = "proto/mydb/trigger/v1/trigger.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("trigger_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
