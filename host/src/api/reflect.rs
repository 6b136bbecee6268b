//! A plugin's application services as the plugin describes them over gRPC server
//! reflection (`grpc.reflection.v1`), and calls to them with dynamic messages: what
//! `baton ctl call` uses to call a method by name with JSON, needing no descriptors of
//! its own.

use std::collections::BTreeSet;

use bytes::Buf;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Most files a service's descriptors may span (its own and every import).
const MAX_FILES: usize = 256;

/// The descriptors of `service` and everything it uses, fetched from the server behind
/// `transport` (which adds whatever metadata routes the calls, such as `x-baton-plugin`).
/// Asks `grpc.reflection.v1`, then the older `v1alpha` (all grpcio serves).
pub async fn descriptors<T>(transport: T, service: &str) -> Result<DescriptorPool, String>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
    T::Future: Send,
{
    let mut version = Version::V1;
    let (mut files, mut seen) = (Vec::<Vec<u8>>::new(), BTreeSet::<String>::new());
    let mut wanted = vec![Wanted::Symbol(service.to_owned())];
    while let Some(request) = wanted.pop() {
        if files.len() >= MAX_FILES {
            return Err(format!(
                "{service}'s descriptors span more than {MAX_FILES} files"
            ));
        }
        let found = match ask(transport.clone(), version, request.clone()).await {
            Err(status)
                if status.code() == tonic::Code::Unimplemented && version == Version::V1 =>
            {
                version = Version::V1Alpha;
                ask(transport.clone(), version, request).await
            }
            other => other,
        }
        .map_err(|s| reflection_status(&s))??;
        for file in found {
            let head = file_head(&file)?;
            if !seen.insert(head.name.clone()) {
                continue;
            }
            // Imports the server did not send along are asked for by name.
            for import in head.imports {
                if !seen.contains(&import) {
                    wanted.push(Wanted::File(import));
                }
            }
            files.push(file);
        }
    }
    // An encoded FileDescriptorSet is its files, each as field 1.
    let mut set = Vec::new();
    for file in &files {
        prost::encoding::bytes::encode(1, file, &mut set);
    }
    DescriptorPool::decode(set.as_slice()).map_err(|e| format!("bad descriptors: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V1Alpha,
}

#[derive(Clone)]
enum Wanted {
    Symbol(String),
    File(String),
}

/// One reflection question; the files of the answer, or the server's error text.
async fn ask<T>(
    transport: T,
    version: Version,
    wanted: Wanted,
) -> Result<Result<Vec<Vec<u8>>, String>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
    T::Future: Send,
{
    // The two versions' messages are alike field for field, in modules of their own.
    macro_rules! ask_in {
        ($pb:path) => {{
            use pb::server_reflection_request::MessageRequest as Q;
            use pb::server_reflection_response::MessageResponse as R;
            use $pb as pb;
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(match wanted {
                    Wanted::Symbol(s) => Q::FileContainingSymbol(s),
                    Wanted::File(f) => Q::FileByFilename(f),
                }),
            };
            let answer = pb::server_reflection_client::ServerReflectionClient::new(transport)
                .server_reflection_info(tokio_stream::iter([request]))
                .await?
                .into_inner()
                .message()
                .await?
                .ok_or_else(|| Status::internal("reflection ended without an answer"))?;
            Ok(match answer.message_response {
                Some(R::FileDescriptorResponse(found)) => Ok(found.file_descriptor_proto),
                Some(R::ErrorResponse(e)) => Err(format!(
                    "reflection: {} ({})",
                    e.error_message, e.error_code
                )),
                _ => Err("reflection gave no file descriptors".into()),
            })
        }};
    }
    match version {
        Version::V1 => ask_in!(tonic_reflection::pb::v1),
        Version::V1Alpha => ask_in!(tonic_reflection::pb::v1alpha),
    }
}

fn reflection_status(status: &Status) -> String {
    if status.code() == tonic::Code::Unimplemented {
        "it does not serve gRPC reflection (grpc.reflection.v1 or v1alpha), which calls by name need"
            .to_owned()
    } else {
        format!(
            "reflection failed ({:?}): {}",
            status.code(),
            status.message()
        )
    }
}

/// The name and imports of an encoded `FileDescriptorProto` (fields 1 and 3).
struct FileHead {
    name: String,
    imports: Vec<String>,
}

fn file_head(mut bytes: &[u8]) -> Result<FileHead, String> {
    use prost::encoding::{WireType, decode_key, decode_varint, skip_field};
    let bad = |e: prost::DecodeError| format!("a file descriptor does not decode: {e}");
    let mut head = FileHead {
        name: String::new(),
        imports: Vec::new(),
    };
    while bytes.has_remaining() {
        let (tag, wire) = decode_key(&mut bytes).map_err(bad)?;
        if wire == WireType::LengthDelimited && (tag == 1 || tag == 3) {
            let len = usize::try_from(decode_varint(&mut bytes).map_err(bad)?)
                .map_err(|_| "a descriptor field is too long".to_owned())?;
            if len > bytes.remaining() {
                return Err("a file descriptor is truncated".into());
            }
            let text = String::from_utf8_lossy(&bytes[..len]).into_owned();
            bytes.advance(len);
            if tag == 1 {
                head.name = text;
            } else {
                head.imports.push(text);
            }
        } else {
            skip_field(
                wire,
                tag,
                &mut bytes,
                prost::encoding::DecodeContext::default(),
            )
            .map_err(bad)?;
        }
    }
    Ok(head)
}

/// Encodes dynamic messages and decodes answers of one type.
#[derive(Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec whose answers are `output` messages.
    pub fn new(output: MessageDescriptor) -> Self {
        Self { output }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicCodec;
    type Decoder = DynamicCodec;

    fn encoder(&mut self) -> Self::Encoder {
        self.clone()
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.clone()
    }
}

impl Encoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the request: {e}")))
    }
}

impl Decoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.output.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the answer: {e}")))
    }
}
