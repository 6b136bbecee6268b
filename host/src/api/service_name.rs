//! What may be a plugin's application service: a gRPC service's full name, and none of
//! the services only its supervisor calls. The config's `services` are held to it, and
//! the daemon forwards nothing else.

/// Packages only a plugin's supervisor calls (every version of each), with what each
/// is, for the refusal.
const SUPERVISORS_OWN: [(&str, &str); 2] = [
    (
        "baton.plugin.",
        "its lifecycle service (Snapshot, Restore, Shutdown…)",
    ),
    (
        "grpc.health.",
        "its health service (`baton ctl status` shows its state)",
    ),
];

/// Whether `name` has the shape of a gRPC service's full name: dot-separated
/// identifiers (ASCII letters, digits and `_`, none starting with a digit), as the
/// config's `services` must be. Nothing else is ever forwarded, whatever a plugin's
/// own server would make of it.
pub(crate) fn is_service_name(name: &str) -> bool {
    let part = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    name.split('.').all(part)
}

/// What `service` is, if it is one only a plugin's supervisor calls.
pub(crate) fn supervisors_own_service(service: &str) -> Option<&'static str> {
    SUPERVISORS_OWN
        .iter()
        .find(|(package, _)| service.starts_with(package))
        .map(|(_, what)| *what)
}
