//! Proof that a unary call never reached its server, from a connection that died.
//!
//! A call whose server dies after the request was written is, as a rule, not retried:
//! the server may have run it. One case can be proven otherwise. When a process's Unix
//! stream socket closes with data it never read, the kernel resets its peer's end
//! (the next read fails with ECONNRESET, where a socket closed with everything read
//! gives end of file). What was unread is a suffix of what was written, so it holds the
//! last byte written. If that byte ended a unary call's request (its last DATA frame,
//! with END_STREAM, holding the message's last bytes and no padding), the server never
//! had the whole message, and no gRPC server runs a
//! unary handler without it: the call never ran and may go to another process. This is
//! the call sent to a plugin killed a moment before (its process still being torn
//! down, its socket not yet closed), and a plugin stopped or stuck before reading.
//!
//! The server is assumed to take bytes off its socket by reading them, as every gRPC
//! server does: one that only peeks (`MSG_PEEK`) and acts on what it saw leaves them
//! queued, and its call would be sent again. Work a server does on a request before it
//! has the whole message (a check of its headers) may likewise happen twice.
//!
//! [`Outbound`] watches a client connection's bytes for this: the frames written (to
//! know which one the last written byte ended) and how reading ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The client's connection preface, written before the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEAD_LEN: usize = 9;
const DATA: u8 = 0x0;
#[cfg(test)]
const HEADERS: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;
/// `last_end` when the last byte written ended no frame that ended a stream.
const NONE: u64 = 0;

/// What a client connection's writes and reads say about the calls on it. Shared between
/// the connection's socket (which writes to it) and its calls (which read it).
#[derive(Debug, Default)]
pub struct Outbound {
    /// `stream id + 1` of the stream whose END_STREAM frame the last written byte
    /// completed, or [`NONE`].
    last_end: AtomicU64,
    /// The server closed its end with bytes of ours unread.
    reset_unread: AtomicBool,
}

impl Outbound {
    /// Whether the request of `stream` provably never reached its server whole: the
    /// server closed with some of our bytes unread, and the last byte written was the
    /// end of that request. Only for unary calls: a streaming call's server may have
    /// begun before the end of the request.
    pub fn unread_end_of(&self, stream: u32) -> bool {
        self.reset_unread.load(Ordering::Acquire)
            && self.last_end.load(Ordering::Acquire) == u64::from(stream) + 1
    }

    /// The stream whose request's end the last byte written was, if it was one.
    #[cfg(test)]
    pub(crate) fn last_ended(&self) -> Option<u32> {
        let end = self.last_end.load(Ordering::Acquire);
        (end != NONE).then(|| u32::try_from(end - 1).unwrap_or(u32::MAX))
    }

    /// A read failed with `error`.
    pub(crate) fn read_failed(&self, error: &std::io::Error) {
        if error.raw_os_error() == Some(libc::ECONNRESET) {
            self.reset_unread.store(true, Ordering::Release);
        }
    }
}

/// Follows the frames in the bytes written on a client connection.
#[derive(Debug)]
pub(crate) struct FrameWalker {
    preface_left: usize,
    head: [u8; FRAME_HEAD_LEN],
    head_len: usize,
    /// Payload bytes of the current frame not yet written.
    payload_left: usize,
    /// The current frame ends a stream: `stream id + 1`, or [`NONE`].
    ends: u64,
}

impl Default for FrameWalker {
    fn default() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            head: [0; FRAME_HEAD_LEN],
            head_len: 0,
            payload_left: 0,
            ends: NONE,
        }
    }
}

impl FrameWalker {
    /// A walker for bytes that follow the connection's preface (a server's view).
    #[cfg(test)]
    pub(crate) fn after_preface() -> Self {
        Self {
            preface_left: 0,
            ..Self::default()
        }
    }

    /// Follows `bytes`, just written, and records in `out` what the last of them ended.
    pub(crate) fn wrote(&mut self, mut bytes: &[u8], out: &Outbound) {
        if bytes.is_empty() {
            return;
        }
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        // What the last byte written ended: nothing, unless it completed a frame.
        let mut ended = NONE;
        while !bytes.is_empty() {
            ended = NONE;
            if self.head_len < FRAME_HEAD_LEN {
                let take = (FRAME_HEAD_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
                self.head_len += take;
                bytes = &bytes[take..];
                if self.head_len < FRAME_HEAD_LEN {
                    break;
                }
                let h = &self.head;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                // Only a DATA frame whose last byte is the message's own: not an empty
                // one after the message (the server may have read it all before), not
                // a padded one (its last bytes are padding), not HEADERS (no message).
                let ends_message = h[3] == DATA
                    && h[4] & END_STREAM != 0
                    && h[4] & PADDED == 0
                    && self.payload_left > 0;
                self.ends = if ends_message {
                    u64::from(stream) + 1
                } else {
                    NONE
                };
            } else {
                let take = self.payload_left.min(bytes.len());
                self.payload_left -= take;
                bytes = &bytes[take..];
            }
            if self.head_len == FRAME_HEAD_LEN && self.payload_left == 0 {
                ended = self.ends;
                self.head_len = 0;
            }
        }
        out.last_end.store(ended, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
        ];
        f.extend_from_slice(&stream.to_be_bytes());
        f.resize(FRAME_HEAD_LEN + payload, 0x5a);
        f
    }

    #[test]
    fn the_last_byte_written_is_known_to_end_a_request_only_when_it_does() {
        let out = Outbound::default();
        let mut walker = FrameWalker::default();
        let preface = vec![b'P'; PREFACE_LEN];
        let settings = frame(0x4, 0, 0, 12);
        let headers = frame(HEADERS, 0x4, 3, 40);
        let data = frame(DATA, END_STREAM, 3, 70);
        let ping = frame(0x6, 0, 0, 8);
        let all = [preface, settings, headers, data.clone()].concat();
        // Whole, or a byte at a time: the same answer.
        walker.wrote(&all, &out);
        assert_eq!(out.last_end.load(Ordering::Relaxed), 4);
        let (out, mut walker) = (Outbound::default(), FrameWalker::default());
        for (i, b) in all.iter().enumerate() {
            walker.wrote(std::slice::from_ref(b), &out);
            let expected = if i + 1 == all.len() { 4 } else { 0 };
            assert_eq!(
                out.last_end.load(Ordering::Relaxed),
                expected,
                "after byte {i}"
            );
        }
        // Only with a reset does it prove anything, and only for that stream.
        assert!(!out.unread_end_of(3));
        out.read_failed(&std::io::Error::from_raw_os_error(libc::ECONNRESET));
        assert!(out.unread_end_of(3) && !out.unread_end_of(5));
        // A frame written after it takes the proof away; so does half a frame.
        walker.wrote(&ping, &out);
        assert!(!out.unread_end_of(3));
        walker.wrote(&data[..20], &out);
        assert!(!out.unread_end_of(3));
        walker.wrote(&data[20..], &out);
        assert!(out.unread_end_of(3));
        // A plain end of file is no reset.
        let quiet = Outbound::default();
        quiet.read_failed(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        quiet.last_end.store(4, Ordering::Relaxed);
        assert!(!quiet.unread_end_of(3));
    }

    #[test]
    fn only_a_data_frame_whose_last_byte_is_the_messages_ends_a_request() {
        let out = Outbound::default();
        let mut walker = FrameWalker::default();
        walker.wrote(&[b'P'; PREFACE_LEN], &out);
        walker.wrote(&frame(DATA, END_STREAM, 7, 10), &out);
        assert_eq!(out.last_end.load(Ordering::Relaxed), 8);
        // HEADERS that end a stream carry no message: a server may have read every DATA
        // frame before them.
        walker.wrote(&frame(HEADERS, 0x5, 7, 10), &out);
        assert_eq!(out.last_end.load(Ordering::Relaxed), NONE);
        walker.wrote(&frame(DATA, 0, 9, 10), &out);
        assert_eq!(out.last_end.load(Ordering::Relaxed), NONE);
        // Nor does an empty DATA frame, after the message in frames before it.
        walker.wrote(&frame(DATA, END_STREAM, 9, 0), &out);
        assert_eq!(out.last_end.load(Ordering::Relaxed), NONE);
        // Nor a padded one: its last bytes are padding, not the message.
        walker.wrote(&frame(DATA, END_STREAM | PADDED, 9, 10), &out);
        assert_eq!(out.last_end.load(Ordering::Relaxed), NONE);
        // RST_STREAM carries no END_STREAM flag, whatever its flags byte says.
        walker.wrote(&frame(0x3, END_STREAM, 9, 4), &out);
        assert_eq!(out.last_end.load(Ordering::Relaxed), NONE);
        // The walker keeps its place after all of them.
        walker.wrote(&frame(DATA, END_STREAM, 11, 3), &out);
        assert_eq!(out.last_end.load(Ordering::Relaxed), 12);
    }
}
