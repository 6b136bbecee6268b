//! gRPC's message framing for the unary calls made and served by hand: a 5-byte prefix
//! (a compression flag, then the length, big-endian) before each message.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::Status;

/// The bytes before each gRPC message: a compression flag, then the length (big-endian).
pub(crate) const PREFIX: usize = 5;

/// One uncompressed gRPC message of `len` bytes, as `encode` writes it, with its prefix:
/// a unary request's whole body. Refused if `len` does not fit the prefix.
pub fn grpc_frame(len: usize, encode: impl FnOnce(&mut BytesMut)) -> Result<Bytes, Status> {
    let mut frame = BytesMut::with_capacity(PREFIX + len);
    put_prefix(&mut frame, len)?;
    encode(&mut frame);
    Ok(frame.freeze())
}

/// The start of a frame whose message is `len` bytes long and begins with `start`: the
/// prefix and `start`, the rest to follow as a piece of its own (see
/// [`Framed`](crate::Framed)); for tests that build such frames piece by piece.
#[cfg(test)]
pub(crate) fn grpc_frame_start(len: usize, start: &[u8]) -> Result<Bytes, Status> {
    let mut frame = BytesMut::with_capacity(PREFIX + start.len());
    put_prefix(&mut frame, len)?;
    frame.extend_from_slice(start);
    Ok(frame.freeze())
}

/// The message length a frame's prefix announces.
pub(crate) fn announced_len(prefix: &[u8; PREFIX]) -> usize {
    u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize
}

fn put_prefix(frame: &mut BytesMut, len: usize) -> Result<(), Status> {
    let prefix_len = u32::try_from(len).map_err(|_| {
        Status::out_of_range(format!(
            "a message of {len} bytes is more than gRPC can frame"
        ))
    })?;
    frame.put_u8(0);
    frame.put_u32(prefix_len);
    Ok(())
}

/// A message's frame (prefix and message), in one piece or two: a message that ends in a
/// large byte field can pass that field on as the second piece, without copying it
/// into a buffer of its own (a 64 KiB copy per call, and a heap that grows and shrinks
/// with it).
pub struct Framed {
    /// The prefix and the message, or its start.
    pub head: Bytes,
    /// The rest of the message; may be empty.
    pub tail: Bytes,
}

impl From<Bytes> for Framed {
    /// A frame in one piece, as [`grpc_frame`](crate::grpc_frame) makes it.
    fn from(head: Bytes) -> Self {
        Self {
            head,
            tail: Bytes::new(),
        }
    }
}

/// Byte fields from this size on go as a piece of their own behind the frame's start:
/// a second DATA frame costs less than the copy from here on.
const SPLIT_BYTES_FROM: usize = 8 << 10;

/// The frame of `rest` (a message with one byte field left empty) followed by that field,
/// number `number`, holding `bytes`: the field's bytes copied in behind for a small
/// field, passed on as the second piece from 8 KiB on. Protobuf parsers
/// take fields in any order, so the large field can go last whatever its number; an
/// empty field is left out, as proto3 encoders leave out every default value.
pub fn grpc_frame_bytes_last(
    rest: &impl prost::Message,
    number: u32,
    bytes: Bytes,
) -> Result<Framed, Status> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let rest_len = rest.encoded_len();
    let len = bytes.len() as u64;
    let key = if bytes.is_empty() {
        0
    } else {
        key_len(number) + encoded_len_varint(len)
    };
    let message_len = rest_len + key + bytes.len();
    let split = bytes.len() >= SPLIT_BYTES_FROM;
    let copied = if split { 0 } else { bytes.len() };
    let mut head = BytesMut::with_capacity(PREFIX + rest_len + key + copied);
    put_prefix(&mut head, message_len)?;
    // The buffer was made for the encoded length, so encoding cannot run out.
    let _ = rest.encode(&mut head);
    if bytes.is_empty() {
        return Ok(head.freeze().into());
    }
    encode_key(number, WireType::LengthDelimited, &mut head);
    encode_varint(len, &mut head);
    if !split {
        head.extend_from_slice(&bytes);
        return Ok(head.freeze().into());
    }
    Ok(Framed {
        head: head.freeze(),
        tail: bytes,
    })
}

/// DATA frames a message may be held in before they are copied into one: a peer
/// sending a message a few bytes per frame costs a copy, not a piece per frame.
const MAX_PIECES: usize = 8;

/// A unary call's one message (a request's or an answer's), put together from the DATA
/// frames it came in, bounded, and never copied unless a peer splits it into more than
/// [`MAX_PIECES`] frames.
pub(crate) struct Assembler {
    max: usize,
    /// The first frames of a message not yet whole, copied together once they were
    /// more than [`MAX_PIECES`]; the frames after them are in `pieces`.
    spill: BytesMut,
    /// The frames of a message not yet whole, as they came (none empty).
    pieces: Vec<Bytes>,
    /// Bytes copied into `spill`, for the tests.
    #[cfg(test)]
    copied: usize,
    have: usize,
    /// The prefix's and the message's length together, once the prefix is in.
    want: Option<usize>,
    message: Option<Message>,
}

impl Assembler {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            spill: BytesMut::new(),
            pieces: Vec::new(),
            #[cfg(test)]
            copied: 0,
            have: 0,
            want: None,
            message: None,
        }
    }

    /// Takes one DATA frame's bytes.
    pub(crate) fn take(&mut self, data: Bytes) -> Result<(), Status> {
        if self.message.is_some() || data.is_empty() {
            // More after the one message a unary call has: ignored, not kept.
            return Ok(());
        }
        self.have += data.len();
        self.pieces.push(data);
        if self.pieces.len() > MAX_PIECES {
            // Appended to what was copied before, so that each byte is copied once: a
            // peer sending small frames would otherwise make every copy longer than the
            // last (a 16 MB message in 256-byte frames took 23 s of CPU).
            for piece in self.pieces.drain(..) {
                #[cfg(test)]
                {
                    self.copied += piece.len();
                }
                self.spill.extend_from_slice(&piece);
            }
        }
        if self.want.is_none() && self.have >= PREFIX {
            let mut prefix = [0u8; PREFIX];
            let mut at = 0;
            let spill = (!self.spill.is_empty()).then(|| &self.spill[..]);
            for piece in spill.into_iter().chain(self.pieces.iter().map(|p| &p[..])) {
                let n = piece.len().min(PREFIX - at);
                prefix[at..at + n].copy_from_slice(&piece[..n]);
                at += n;
                if at == PREFIX {
                    break;
                }
            }
            self.want = Some(PREFIX + self.length(&prefix)?);
        }
        if let Some(want) = self.want
            && self.have >= want
        {
            let mut skip = PREFIX;
            let mut keep = want - PREFIX;
            if !self.spill.is_empty() {
                self.pieces.insert(0, self.spill.split().freeze());
            }
            let mut message = VecDeque::with_capacity(self.pieces.len());
            for mut piece in self.pieces.drain(..) {
                let skipped = skip.min(piece.len());
                piece.advance(skipped);
                skip -= skipped;
                piece.truncate(keep);
                keep -= piece.len();
                if !piece.is_empty() {
                    message.push_back(piece);
                }
            }
            self.message = Some(Message {
                pieces: message,
                remaining: want - PREFIX,
            });
        }
        Ok(())
    }

    /// The length the prefix gives, checked.
    fn length(&self, prefix: &[u8; PREFIX]) -> Result<usize, Status> {
        match prefix[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "the message is marked compressed, with no grpc-encoding",
                ));
            }
            flag => {
                return Err(Status::internal(format!(
                    "the message has an unknown compression flag {flag}"
                )));
            }
        }
        let len = announced_len(prefix);
        if len > self.max {
            return Err(Status::out_of_range(format!(
                "a message of {len} bytes is over the limit of {} bytes",
                self.max
            )));
        }
        Ok(len)
    }

    /// The message, once whole.
    pub(crate) fn into_message(self) -> Option<Message> {
        self.message
    }
}

/// One message, in the pieces it came in (most often one). A [`Buf`]: decoding reads
/// through the pieces, and a byte field that lies within one piece is taken from it
/// without a copy.
#[derive(Debug)]
pub struct Message {
    /// None empty.
    pieces: VecDeque<Bytes>,
    remaining: usize,
}

impl Message {
    /// The message as one buffer: itself when it came in one piece, else a copy.
    pub fn into_bytes(mut self) -> Bytes {
        let len = self.remaining;
        self.copy_to_bytes(len)
    }
}

impl Buf for Message {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.front().map_or(&[], |piece| &piece[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advanced past the message's end");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.pieces.front_mut() else {
                return;
            };
            if front.len() > cnt {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.pieces.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.remaining, "took past the message's end");
        if let Some(front) = self.pieces.front_mut()
            && front.len() >= len
        {
            let taken = front.split_to(len);
            if front.is_empty() {
                self.pieces.pop_front();
            }
            self.remaining -= len;
            return taken;
        }
        let mut out = BytesMut::with_capacity(len);
        out.put((&mut *self).take(len));
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn framed(message: &[u8]) -> Bytes {
        grpc_frame(message.len(), |b| b.extend_from_slice(message)).expect("a frame")
    }

    fn message(assembler: Assembler) -> Option<Vec<u8>> {
        assembler.into_message().map(|m| m.into_bytes().to_vec())
    }

    #[test]
    fn a_message_in_small_frames_is_copied_once() {
        let payload: Vec<u8> = (0..1u32 << 20).map(|i| i as u8).collect();
        let whole = framed(&payload);
        let mut assembler = Assembler::new(2 << 20);
        for piece in whole.chunks(256) {
            assembler
                .take(Bytes::copy_from_slice(piece))
                .expect("taken");
        }
        let copied = assembler.copied;
        assert_eq!(message(assembler).as_deref(), Some(&payload[..]));
        // Each byte once (the last few frames may never be copied).
        assert!(
            copied <= whole.len(),
            "{copied} bytes copied for a {}-byte frame",
            whole.len()
        );
    }

    #[test]
    fn a_message_is_taken_whole_or_from_pieces_and_bounded() {
        let mut one = Assembler::new(100);
        one.take(framed(b"hello")).expect("taken");
        one.take(framed(b"another")).expect("ignored");
        assert_eq!(message(one).as_deref(), Some(&b"hello"[..]));

        let whole = framed(b"in pieces, then more");
        let mut pieces = Assembler::new(100);
        for piece in [&whole[..2], &whole[2..7], &whole[7..12], &whole[12..]] {
            pieces.take(Bytes::copy_from_slice(piece)).expect("taken");
        }
        assert_eq!(
            message(pieces).as_deref(),
            Some(&b"in pieces, then more"[..])
        );

        // A byte at a time: held in a bounded number of pieces, and whole in the end.
        let mut bytewise = Assembler::new(100);
        for byte in whole.iter() {
            bytewise
                .take(Bytes::copy_from_slice(&[*byte]))
                .expect("taken");
            assert!(bytewise.pieces.len() <= MAX_PIECES + 1);
        }
        assert_eq!(
            message(bytewise).as_deref(),
            Some(&b"in pieces, then more"[..])
        );

        let big = Assembler::new(4).take(framed(b"12345")).expect_err("over");
        assert_eq!(big.code(), Code::OutOfRange);
        let mut compressed = framed(b"x").to_vec();
        compressed[0] = 1;
        let refused = Assembler::new(10)
            .take(compressed.into())
            .expect_err("compressed");
        assert_eq!(refused.code(), Code::Internal);
    }

    #[test]
    fn a_field_in_a_piece_of_its_own_is_decoded_without_a_copy() {
        let field = Bytes::from(vec![9u8; 1000]);
        // The prefix, a byte field's key and length (1000 as a varint), then the field.
        let head = grpc_frame_start(3 + field.len(), &[0x0a, 0xe8, 0x07]).expect("a head");
        let mut assembler = Assembler::new(2000);
        assembler.take(head).expect("taken");
        assembler.take(field.clone()).expect("taken");
        let mut message = assembler.into_message().expect("whole");
        assert_eq!(message.remaining(), 1003);
        assert_eq!(message.copy_to_bytes(3).as_ref(), &[0x0a, 0xe8, 0x07]);
        let taken = message.copy_to_bytes(1000);
        assert_eq!(taken.as_ptr(), field.as_ptr(), "the field was copied");
        assert_eq!(message.remaining(), 0);
    }
}
