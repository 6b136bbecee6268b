//! The compatibility gate's second half: the services a new build offers, as it
//! describes them over gRPC reflection, compared with the application's own
//! descriptors (`api_descriptors`): every method the application knows must still be
//! there with the same shape, and every field of every message it sends or reads must
//! keep its number and type. A build that fails this never goes live.

use std::collections::BTreeSet;
use std::path::Path;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};

/// Reads the application's descriptors: an encoded `FileDescriptorSet` (what
/// `protoc -o`, `buf build -o` or tonic-prost-build write), which must define every
/// service in `services`.
pub fn load(path: &Path, services: &[String]) -> Result<DescriptorPool, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let pool = DescriptorPool::decode(bytes.as_slice()).map_err(|e| {
        format!(
            "{} is not an encoded FileDescriptorSet (protoc -o): {e}",
            path.display()
        )
    })?;
    for service in services {
        if pool.get_service_by_name(service).is_none() {
            return Err(format!(
                "{} does not define {service}, which `services` names",
                path.display()
            ));
        }
    }
    Ok(pool)
}

/// How `offered`'s `service` differs from `expected`'s in ways that break the
/// application's calls; empty when compatible.
pub fn incompatibilities(
    expected: &DescriptorPool,
    offered: &DescriptorPool,
    service: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    let Some(want) = expected.get_service_by_name(service) else {
        return found;
    };
    let Some(have) = offered.get_service_by_name(service) else {
        found.push(format!("it does not describe {service}"));
        return found;
    };
    let mut compared = BTreeSet::new();
    for method in want.methods() {
        let name = format!("{service}/{}", method.name());
        let Some(offered) = have.methods().find(|m| m.name() == method.name()) else {
            found.push(format!("{name} is gone"));
            continue;
        };
        let shape = |client: bool, server: bool| match (client, server) {
            (false, false) => "unary",
            (false, true) => "server streaming",
            (true, false) => "client streaming",
            (true, true) => "bidirectional streaming",
        };
        let (was, is) = (
            shape(method.is_client_streaming(), method.is_server_streaming()),
            shape(offered.is_client_streaming(), offered.is_server_streaming()),
        );
        if was != is {
            found.push(format!("{name} changed from {was} to {is}"));
        }
        for (what, want, have) in [
            ("takes", method.input(), offered.input()),
            ("returns", method.output(), offered.output()),
        ] {
            if want.full_name() != have.full_name() {
                found.push(format!(
                    "{name} {what} {} instead of {}",
                    have.full_name(),
                    want.full_name()
                ));
            } else {
                compare_messages(&want, &have, &mut compared, &mut found);
            }
        }
    }
    found
}

/// Compares two versions of one message, and the messages its fields hold, once each.
fn compare_messages(
    want: &MessageDescriptor,
    have: &MessageDescriptor,
    compared: &mut BTreeSet<String>,
    found: &mut Vec<String>,
) {
    if !compared.insert(want.full_name().to_owned()) {
        return;
    }
    for field in want.fields() {
        let name = format!(
            "{}.{} (field {})",
            want.full_name(),
            field.name(),
            field.number()
        );
        let Some(offered) = have.get_field(field.number()) else {
            found.push(format!("{name} is gone"));
            continue;
        };
        let (was, is) = (shape(&field), shape(&offered));
        if was != is {
            found.push(format!("{name} changed from {was} to {is}"));
            continue;
        }
        if let (Kind::Message(w), Kind::Message(h)) = (field.kind(), offered.kind()) {
            compare_messages(&w, &h, compared, found);
        }
    }
}

/// A field's type as the wire sees it: its kind, and whether it repeats or maps.
fn shape(field: &FieldDescriptor) -> String {
    let kind = match field.kind() {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_lowercase(),
    };
    if field.is_map() {
        format!("map {kind}")
    } else if field.is_list() {
        format!("repeated {kind}")
    } else {
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(proto: &str) -> DescriptorPool {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("api.proto"), proto).expect("write");
        let fds = protox::compile(["api.proto"], [dir.path()]).expect("compile");
        DescriptorPool::from_file_descriptor_set(fds).expect("pool")
    }

    const API: &str = "syntax = \"proto3\"; package app.v1;
        service S { rpc Get(Req) returns (Res); rpc Watch(Req) returns (stream Res); }
        message Req { string key = 1; Inner inner = 2; }
        message Inner { int64 n = 1; }
        message Res { repeated string values = 1; }";

    #[test]
    fn an_unchanged_or_extended_api_is_compatible() {
        let extended = API
            .replace("message Res {", "message Res { bool more = 2;")
            .replace("rpc Get", "rpc New(Req) returns (Res); rpc Get");
        assert!(incompatibilities(&pool(API), &pool(API), "app.v1.S").is_empty());
        assert!(incompatibilities(&pool(API), &pool(&extended), "app.v1.S").is_empty());
    }

    #[test]
    fn every_breaking_change_is_named() {
        let broken = API
            .replace(
                "rpc Watch(Req) returns (stream Res);",
                "rpc Watch(Req) returns (Res);",
            )
            .replace("int64 n = 1;", "string n = 1;")
            .replace("repeated string values = 1;", "string values = 1;")
            .replace("rpc Get(Req) returns (Res);", "");
        let found = incompatibilities(&pool(API), &pool(&broken), "app.v1.S");
        let all = found.join("; ");
        for words in [
            "app.v1.S/Get is gone",
            "app.v1.S/Watch changed from server streaming to unary",
            "app.v1.Inner.n (field 1) changed from int64 to string",
            "app.v1.Res.values (field 1) changed from repeated string to string",
        ] {
            assert!(all.contains(words), "{words}: {all}");
        }
    }
}
