//! Which calls the daemon forwards to a plugin, and the words of each refusal. A
//! forwarded call carries the plugin's launch token, so the plugin cannot tell it from
//! its host's: only the application services its `Describe` lists, and reflection
//! for them, go through; its lifecycle and health services are its supervisor's alone.
//! Every refusal names the `x-baton-plugin` header, the plugin, and what is served.

use std::collections::BTreeSet;

use tonic::Status;

use super::PLUGIN_METADATA_KEY;
use crate::plugin_set::PluginSet;
use crate::printable::printable;
use crate::route::Live;

/// Reflection answers questions about the described services; clients calling by name
/// (`baton ctl call`, grpcurl) need it.
const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

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

/// Names echoed into a message are cut to this many characters.
const MAX_NAME_CHARS: usize = 96;

/// Names listed in one message: past this many, a count of the rest.
const MAX_LISTED: usize = 16;

/// The service of a gRPC path, `/package.Service/Method`; `None` for any other shape
/// (a query, more or fewer segments), which no gRPC client sends and no plugin's
/// server should be left to interpret.
pub(super) fn service_of(path_and_query: &str) -> Option<&str> {
    let (service, method) = path_and_query.strip_prefix('/')?.split_once('/')?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '?', '#']);
    (plain(service) && plain(method)).then_some(service)
}

/// PERMISSION_DENIED for a call to one of the services only a plugin's supervisor
/// calls; `None` for any other. Denied, not UNIMPLEMENTED: the plugin does serve it,
/// and a client that treats UNIMPLEMENTED as "try something else" (as reflection
/// clients do) should not be sent looking.
pub(super) fn supervisors_own(
    plugin: &str,
    service: &str,
    serving: Option<&Live>,
) -> Option<Status> {
    let (_, what) = SUPERVISORS_OWN
        .iter()
        .find(|(package, _)| service.starts_with(package))?;
    Some(Status::permission_denied(format!(
        "plugin {plugin}: {service} is {what}, which only its supervisor calls; the daemon \
         forwards only the services a plugin's Describe lists (and gRPC reflection): {}",
        described(serving)
    )))
}

/// UNIMPLEMENTED for a call to `path` that `live`, the generation that would serve
/// it, does not describe; `None` when it does, or the call is for reflection.
pub(crate) fn undescribed(
    plugin: &str,
    live: &Live,
    path: &str,
    plugins: &PluginSet,
) -> Option<Status> {
    let service = service_of(path)?;
    if live.services.contains(service) || REFLECTION.contains(&service) {
        return None;
    }
    Some(Status::unimplemented(format!(
        "plugin {plugin} does not serve {}: {}; {PLUGIN_METADATA_KEY} names the plugin a call \
         is for ({})",
        cut(service),
        described(Some(live)),
        served_by(service, plugins)
    )))
}

/// UNIMPLEMENTED for a path that is not a gRPC method's.
pub(super) fn not_a_method(plugin: &str, path: &str) -> Status {
    Status::unimplemented(format!(
        "plugin {plugin}: {} is not a gRPC method path (/package.Service/Method)",
        cut(path)
    ))
}

/// UNIMPLEMENTED for a call without `x-baton-plugin` to a service the daemon does not
/// serve itself: the header it lacks, and the plugins that serve what it wants.
pub(super) fn no_header(path: &str, plugins: &PluginSet) -> Status {
    let wanted = service_of(path).unwrap_or(path);
    Status::unimplemented(format!(
        "the daemon itself serves only baton.host.v1.Supervisor, not {}: a call for a \
         plugin's service names the plugin in metadata {PLUGIN_METADATA_KEY} ({})",
        cut(path),
        served_by(wanted, plugins)
    ))
}

/// NOT_FOUND for a call whose `x-baton-plugin` names no plugin of this host.
pub(super) fn no_such_plugin(name: &str, path: &str, plugins: &PluginSet) -> Status {
    let wanted = service_of(path).unwrap_or(path);
    Status::not_found(format!(
        "no plugin named {} in this host (it has: {}); {PLUGIN_METADATA_KEY} names the plugin \
         a call is for ({})",
        crate::printable::quoted(name, 64),
        listed(plugins.names().iter().map(String::as_str)),
        served_by(wanted, plugins)
    ))
}

/// What the serving generation's `Describe` lists, for a message.
fn described(serving: Option<&Live>) -> String {
    match serving {
        None => "its services are known once it serves".to_owned(),
        Some(live) if live.services.is_empty() => {
            "its Describe lists no application services".to_owned()
        }
        Some(live) => format!(
            "its Describe lists {}",
            listed(live.services.iter().map(String::as_str))
        ),
    }
}

/// Which plugins serve `service` now, or, if none does, which plugins there are.
fn served_by(service: &str, plugins: &PluginSet) -> String {
    let all = plugins.now();
    let serving: BTreeSet<&str> = all
        .iter()
        .filter(|(_, handle)| {
            handle
                .serving_now()
                .is_some_and(|live| live.services.contains(service))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let service = cut(service);
    match serving.len() {
        0 => format!(
            "no plugin here serves {service}; the plugins: {}",
            listed(all.keys().map(String::as_str))
        ),
        1 => format!("{} serves {service}", listed(serving)),
        _ => format!("{} serve {service}", listed(serving)),
    }
}

/// `names`, comma separated, at most [`MAX_LISTED`] of them, each cut and printable.
fn listed<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut names = names.into_iter();
    let mut text = names
        .by_ref()
        .take(MAX_LISTED)
        .map(cut)
        .collect::<Vec<_>>()
        .join(", ");
    let more = names.count();
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    if text.is_empty() {
        text.push_str("none");
    }
    text
}

/// A name for a message: at most [`MAX_NAME_CHARS`] characters, controls escaped.
fn cut(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((end, _)) => format!("{}…", printable(&name[..end])),
        None => printable(name).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_method_path_has_a_service() {
        assert_eq!(service_of("/kv.v1.KV/Get"), Some("kv.v1.KV"));
        for odd in [
            "/kv.v1.KV/Get?x=1",
            "/kv.v1.KV/a/../../baton.plugin.v1.Plugin/Shutdown",
            "/kv.v1.KV/",
            "//Get",
            "kv.v1.KV/Get",
            "/kv.v1.KV",
            "/",
        ] {
            assert_eq!(service_of(odd), None, "{odd}");
        }
    }

    #[test]
    fn the_supervisors_own_services_are_denied_and_no_other() {
        for own in [
            "baton.plugin.v1.Plugin",
            "baton.plugin.v2.Plugin",
            "grpc.health.v1.Health",
        ] {
            let denied = supervisors_own("p", own, None).expect("denied");
            assert_eq!(denied.code(), tonic::Code::PermissionDenied);
            assert!(denied.message().contains("only its supervisor calls"));
        }
        for other in [
            "kv.v1.KV",
            "grpc.reflection.v1.ServerReflection",
            "batonx.plugin.v1.Plugin",
            "grpc.healthz.Health",
        ] {
            assert!(supervisors_own("p", other, None).is_none(), "{other}");
        }
    }

    #[test]
    fn lists_and_names_are_bounded() {
        let many: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
        let text = listed(many.iter().map(String::as_str));
        assert!(text.ends_with(" and 984 more"), "{text}");
        assert!(cut(&"\u{1}".repeat(10_000)).len() < 1000);
        assert_eq!(listed([]), "none");
    }
}
