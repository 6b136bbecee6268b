use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{http_full, start_bare, wait_until};

#[test]
fn idle_connections_cannot_hold_the_api_and_big_bodies_are_refused_unread() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());

    // 300 connections that never send a request: more than the cap of 256.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(db.addr).expect("connect"))
        .collect();
    // A client that sends a request is still answered once the idle ones are cut.
    let (status, _, body) = http_full(db.addr, "GET", "/health", &[], "");
    assert_eq!((status, body.as_str()), (200, "OK"));
    // And the idle ones were closed by the server.
    let mut first = idle.into_iter().next().expect("one");
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let mut byte = [0u8; 1];
    assert_eq!(first.read(&mut byte).expect("closed, not timed out"), 0);

    // A body announced larger than the limit is refused before it is sent.
    let mut stream = TcpStream::connect(db.addr).expect("connect");
    stream
        .write_all(b"POST /api/v3/write_lp?db=m HTTP/1.1\r\nhost: tsdb\r\ncontent-length: 999999999\r\n\r\n")
        .expect("send the head");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let answer = wait_until("the refusal arrives", Duration::from_secs(20), || {
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
    });
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("16777216"), "the limit is named: {answer}");
}
