//! Compiles the tests' application proto (an embedder's plugin API stand-in) with protox.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let file = "proto/mydb/trigger/v1/trigger.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
