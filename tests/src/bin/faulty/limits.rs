//! The faulty plugin's methods that push against its resource limits: files, descriptors
//! and processes. Each says how far it got and what stopped it.

use baton_plugin_sdk::{Bytes, Status};

/// The methods, for `Describe`.
pub const METHODS: [(&str, &str); 3] = [
    (
        "write-file",
        "PAYLOAD \"PATH BYTES\": writes BYTES bytes to PATH (relative to the working \
         directory); says how many",
    ),
    (
        "open-files",
        "opens /dev/null PAYLOAD times, keeping each open; says how many opened and why \
         the next did not, then closes them",
    ),
    (
        "spawn",
        "starts PAYLOAD `sleep`s; says how many started and why the next did not, then \
         kills them",
    ),
];

/// Runs `method` if it is one of these.
pub fn call(method: &str, payload: &[u8]) -> Option<Result<Bytes, Status>> {
    let text = String::from_utf8_lossy(payload);
    let text = text.trim();
    Some(match method {
        "write-file" => write_file(text),
        "open-files" => count(text).map(open_files),
        "spawn" => count(text).map(spawn),
        _ => return None,
    })
}

fn count(text: &str) -> Result<usize, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("payload: a count, not {text:?}")))
}

fn write_file(text: &str) -> Result<Bytes, Status> {
    use std::io::Write;
    let (path, bytes) = text
        .split_once(' ')
        .and_then(|(p, b)| Some((p, b.parse::<usize>().ok()?)))
        .ok_or_else(|| Status::invalid_argument("payload: \"PATH BYTES\""))?;
    let mut file = std::fs::File::create(path)
        .map_err(|e| Status::internal(format!("cannot create {path}: {e}")))?;
    let chunk = vec![b'x'; 64 << 10];
    let mut written = 0;
    while written < bytes {
        let n = chunk.len().min(bytes - written);
        file.write_all(&chunk[..n])
            .map_err(|e| Status::internal(format!("wrote {written} bytes, then: {e}")))?;
        written += n;
    }
    Ok(Bytes::from(format!("wrote {written}")))
}

fn open_files(n: usize) -> Bytes {
    let mut held = Vec::new();
    let mut stopped = String::from("none");
    for _ in 0..n {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) => {
                stopped = e.to_string();
                break;
            }
        }
    }
    Bytes::from(format!("opened {}: {stopped}", held.len()))
}

fn spawn(n: usize) -> Bytes {
    let mut children = Vec::new();
    let mut stopped = String::from("none");
    for _ in 0..n {
        match std::process::Command::new("sleep")
            .arg("60")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => children.push(child),
            Err(e) => {
                stopped = e.to_string();
                break;
            }
        }
    }
    let started = children.len();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    Bytes::from(format!("started {started}: {stopped}"))
}
