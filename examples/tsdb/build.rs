//! Compiles tsdb's plugin API with protox (no system protoc), and keeps its encoded
//! descriptors for the plugins' reflection and the host's compatibility check.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let file = "proto/tsdb/engine/v1/engine.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("engine_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
