//! The example application API as a later build changed it (`TriggerResult.total` a
//! string): only its descriptors, for the reflection of a build that broke the API.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let file = "../example-plugins/trigger/proto/mydb/trigger/v1/trigger.proto";
    println!("cargo:rerun-if-changed={file}");
    let original = std::fs::read_to_string(file)?;
    let changed = original.replace("uint64 total = 1;", "string total = 1;");
    if changed == original {
        return Err("trigger.proto no longer has `uint64 total = 1;` to change".into());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
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
