//! Compiles the tests' application proto (an embedder's plugin API stand-in) with protox,
//! and keeps its descriptors for the plugins' reflection service.

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
    // The same API as a later build changed it: only its descriptors, for reflection.
    let changed = "proto-changed/mydb/trigger/v1/trigger.proto";
    println!("cargo:rerun-if-changed={changed}");
    let fds = protox::compile(["mydb/trigger/v1/trigger.proto"], ["proto-changed"])?;
    std::fs::write(
        out.join("trigger_changed_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    Ok(())
}
