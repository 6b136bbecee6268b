use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::common::{CLIENT_AUTH, rows_with, start_bare_with_token};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

/// A POST of `body`'s bytes with `Content-Encoding: encoding`: the status and the body.
fn post(addr: SocketAddr, path: &str, encoding: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to tsdb");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: tsdb\r\nconnection: close\r\n{CLIENT_AUTH}\r\ncontent-encoding: {encoding}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).expect("send the request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

#[test]
fn gzip_bodies_are_decoded_on_every_write_endpoint_and_bounded_as_plain_ones() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare_with_token(dir.path());

    // Telegraf's content_encoding = "gzip" reaches /write; the clients, v2 and v3. Two
    // gzip members one after the other are one body, as `cat a.gz b.gz` is one file.
    let two_members = [gzip(b"cpu,via=v1 v=1 1\n"), gzip(b"cpu,via=v1b v=1 1")].concat();
    for (path, encoding, body) in [
        ("/write?db=m", "gzip", two_members),
        ("/api/v2/write?bucket=m", "GZIP", gzip(b"cpu,via=v2 v=1 1")),
        (
            "/api/v3/write_lp?db=m&precision=ns",
            "x-gzip",
            gzip(b"cpu,via=v3 v=1 1"),
        ),
        (
            "/api/v3/write_lp?db=m&precision=ns",
            "identity",
            b"cpu,via=plain v=1 1".to_vec(),
        ),
    ] {
        let (status, answer) = post(db.addr, path, encoding, &body);
        assert_eq!(status, 204, "{path} {encoding}: {answer}");
    }
    let vias: Vec<serde_json::Value> = rows_with(
        db.addr,
        &[CLIENT_AUTH],
        "m",
        "SELECT via FROM cpu ORDER BY via",
    )
    .into_iter()
    .map(|r| r["via"].clone())
    .collect();
    assert_eq!(vias, ["plain", "v1", "v1b", "v2", "v3"]);

    // 17 MiB that compress to 17 KB: the decoded body is held to the plain body's 16 MiB.
    let mut bomb = b"cpu,via=bomb v=1 1\n".to_vec();
    bomb.resize(17 << 20, b'\n');
    let bomb = gzip(&bomb);
    assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
    let (status, answer) = post(db.addr, "/api/v3/write_lp?db=m", "gzip", &bomb);
    assert!(
        status == 413 && answer.contains("16777216") && answer.contains("gzip"),
        "{status} {answer}"
    );
    // Not gzip at all, and an encoding tsdb does not decode: refused, naming the header.
    let (status, answer) = post(
        db.addr,
        "/api/v2/write?bucket=m",
        "gzip",
        b"cpu,via=liar v=1 1",
    );
    assert!(
        status == 400 && answer.contains("Content-Encoding: gzip"),
        "{status} {answer}"
    );
    let (status, answer) = post(db.addr, "/write?db=m", "br", b"cpu,via=br v=1 1");
    assert!(
        status == 415 && answer.contains("Content-Encoding: br"),
        "{status} {answer}"
    );
    // None of the refused bodies left a row.
    assert_eq!(
        rows_with(db.addr, &[CLIENT_AUTH], "m", "SELECT via FROM cpu").len(),
        5
    );
}
