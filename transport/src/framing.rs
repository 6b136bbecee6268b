//! gRPC's message framing for the unary calls made and served by hand: a 5-byte prefix
//! (a compression flag, then the length, big-endian) before each message.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::Status;

/// The bytes before each gRPC message: a compression flag, then the length (big-endian).
pub(crate) const PREFIX: usize = 5;

/// One uncompressed gRPC message of `len` bytes, as `encode` writes it, with its prefix:
/// a unary request's whole body. Refused if `len` does not fit the prefix.
pub fn grpc_frame(len: usize, encode: impl FnOnce(&mut BytesMut)) -> Result<Bytes, Status> {
    let prefix_len = u32::try_from(len).map_err(|_| {
        Status::out_of_range(format!(
            "a message of {len} bytes is more than gRPC can frame"
        ))
    })?;
    let mut frame = BytesMut::with_capacity(PREFIX + len);
    frame.put_u8(0);
    frame.put_u32(prefix_len);
    encode(&mut frame);
    Ok(frame.freeze())
}

/// A unary call's one message (a request's or an answer's), put together from the DATA
/// frames it came in, bounded, without a copy when one frame holds it whole.
pub(crate) struct Assembler {
    max: usize,
    /// Bytes of a message whose frames have not all come.
    partial: BytesMut,
    message: Option<Bytes>,
}

impl Assembler {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            partial: BytesMut::new(),
            message: None,
        }
    }

    /// Takes one DATA frame's bytes.
    pub(crate) fn take(&mut self, data: Bytes) -> Result<(), Status> {
        if self.message.is_some() {
            // More after the one message a unary call has: ignored, not kept.
            return Ok(());
        }
        // The usual case: the whole message in one frame, kept without a copy.
        if self.partial.is_empty() && data.len() >= PREFIX {
            let len = self.length(&data)?;
            if data.len() >= PREFIX + len {
                self.message = Some(data.slice(PREFIX..PREFIX + len));
                return Ok(());
            }
        }
        self.partial.extend_from_slice(&data);
        if self.partial.len() >= PREFIX {
            let len = self.length(&self.partial)?;
            if self.partial.len() >= PREFIX + len {
                let mut frame = std::mem::take(&mut self.partial);
                frame.advance(PREFIX);
                frame.truncate(len);
                self.message = Some(frame.freeze());
            }
        }
        Ok(())
    }

    /// The length the prefix at the start of `bytes` gives, checked.
    fn length(&self, bytes: &[u8]) -> Result<usize, Status> {
        match bytes[0] {
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
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if len > self.max {
            return Err(Status::out_of_range(format!(
                "a message of {len} bytes is over the limit of {} bytes",
                self.max
            )));
        }
        Ok(len)
    }
}

impl Assembler {
    /// The message, once whole.
    pub(crate) fn into_message(self) -> Option<Bytes> {
        self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn framed(message: &[u8]) -> Bytes {
        grpc_frame(message.len(), |b| b.extend_from_slice(message)).expect("a frame")
    }

    #[test]
    fn a_message_is_taken_whole_or_from_pieces_and_bounded() {
        let mut one = Assembler::new(100);
        one.take(framed(b"hello")).expect("taken");
        assert_eq!(one.message.as_deref(), Some(&b"hello"[..]));
        one.take(framed(b"another")).expect("ignored");
        assert_eq!(one.message.as_deref(), Some(&b"hello"[..]));

        let whole = framed(b"in pieces");
        let mut pieces = Assembler::new(100);
        for piece in [&whole[..2], &whole[2..7], &whole[7..]] {
            pieces.take(Bytes::copy_from_slice(piece)).expect("taken");
        }
        assert_eq!(pieces.message.as_deref(), Some(&b"in pieces"[..]));

        let big = Assembler::new(4).take(framed(b"12345")).expect_err("over");
        assert_eq!(big.code(), Code::OutOfRange);
        let mut compressed = framed(b"x").to_vec();
        compressed[0] = 1;
        let refused = Assembler::new(10)
            .take(compressed.into())
            .expect_err("compressed");
        assert_eq!(refused.code(), Code::Internal);
    }
}
