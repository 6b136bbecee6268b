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
    // The same API as a later build changed it (TriggerResult.total a string): only
    // its descriptors, for the reflection of a build that broke the API.
    let original = std::fs::read_to_string(file)?;
    let changed = original.replace("uint64 total = 1;", "string total = 1;");
    if changed == original {
        return Err("trigger.proto no longer has `uint64 total = 1;` to change".into());
    }
    let changed_dir = out.join("proto-changed");
    std::fs::create_dir_all(changed_dir.join("mydb/trigger/v1"))?;
    std::fs::write(changed_dir.join("mydb/trigger/v1/trigger.proto"), changed)?;
    let fds = protox::compile(["mydb/trigger/v1/trigger.proto"], [&changed_dir])?;
    std::fs::write(
        out.join("trigger_changed_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    Ok(())
}
