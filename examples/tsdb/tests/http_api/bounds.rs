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

/// HTTP/2's client preface, then an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
const SETTINGS: u8 = 4;
const HEADERS: u8 = 1;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

/// One HTTP/2 frame as read: its type, flags, stream and payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn h2_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let end = (9 + length).min(bytes.len());
        frames.push(Frame {
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
            payload: bytes[9..end].to_vec(),
        });
        bytes = &bytes[end..];
    }
    frames
}

/// Everything the server sends on `stream` until it closes it; panics if it does not
/// within `timeout`.
fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<Frame> {
    stream
        .set_read_timeout(Some(timeout))
        .expect("a read timeout");
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .expect("closed by the server, not timed out");
    h2_frames(&received)
}

/// An HTTP/2 client (gRPC's h2c, as Flight clients speak it) that opens a connection and
/// sends nothing more is told the per-connection bounds, then closed with a GOAWAY; so is
/// one that stops halfway through the connection preface.
#[test]
fn idle_http2_connections_are_bounded_and_closed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());

    let mut idle = TcpStream::connect(db.addr).expect("connect");
    idle.write_all(H2_PREFACE).expect("send the preface");
    let mut half = TcpStream::connect(db.addr).expect("connect");
    half.write_all(&H2_PREFACE[..16])
        .expect("send half a preface");

    let frames = read_until_closed(&mut idle, Duration::from_secs(30));
    let settings = frames.first().expect("the server's SETTINGS");
    assert_eq!(settings.kind, SETTINGS, "{frames:?}");
    let settings = &settings.payload;
    let setting = |id: u16| {
        settings
            .chunks(6)
            .find(|s| u16::from_be_bytes([s[0], s[1]]) == id)
            .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
    };
    assert_eq!(
        setting(3),
        Some(16),
        "MAX_CONCURRENT_STREAMS in {settings:?}"
    );
    assert_eq!(
        setting(6),
        Some(64 << 10),
        "MAX_HEADER_LIST_SIZE in {settings:?}"
    );
    assert!(
        frames.iter().any(|f| f.kind == GOAWAY),
        "a GOAWAY before the close: {frames:?}"
    );

    half.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let mut byte = [0u8; 1];
    assert_eq!(half.read(&mut byte).expect("closed, not timed out"), 0);
    // And the port still serves.
    let (status, _, body) = http_full(db.addr, "GET", "/health", &[], "");
    assert_eq!((status, body.as_str()), (200, "OK"));
}

/// A header as HPACK's "literal, not indexed, new name" without Huffman coding.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    let mut field = vec![0, name.len() as u8];
    field.extend_from_slice(name.as_bytes());
    field.push(value.len() as u8);
    field.extend_from_slice(value.as_bytes());
    field
}

/// A Flight DoGet that sends its head and never its ticket is answered (a gRPC status,
/// once the body's time is up) and its connection then closed as idle: a stalled stream
/// cannot hold a connection slot.
#[test]
fn a_flight_call_that_never_sends_its_ticket_is_answered_and_closed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());

    let block: Vec<u8> = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/arrow.flight.protocol.FlightService/DoGet"),
        (":authority", "tsdb"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .flat_map(|(name, value)| hpack_literal(name, value))
    .collect();
    let mut request = H2_PREFACE.to_vec();
    request.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
    request.extend_from_slice(&[HEADERS, END_HEADERS, 0, 0, 0, 1]);
    request.extend_from_slice(&block);
    let mut stalled = TcpStream::connect(db.addr).expect("connect");
    stalled
        .write_all(&request)
        .expect("send the head of a DoGet");

    // The body's 30 s, then the idle 10 s and the close's grace: well within 120 s.
    let frames = read_until_closed(&mut stalled, Duration::from_secs(120));
    let answer = frames
        .iter()
        .position(|f| f.kind == HEADERS && f.stream == 1 && f.flags & END_STREAM != 0)
        .unwrap_or_else(|| panic!("the call answered and ended: {frames:?}"));
    let goaway = frames
        .iter()
        .position(|f| f.kind == GOAWAY)
        .unwrap_or_else(|| panic!("a GOAWAY: {frames:?}"));
    assert!(answer < goaway, "answered, then closed: {frames:?}");
}
