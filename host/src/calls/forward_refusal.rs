//! Which calls the daemon forwards to a plugin, and the words of each refusal. A
//! forwarded call carries the plugin's launch token, so the plugin cannot tell it from
//! its host's: only the application services its `Describe` lists, and reflection
//! for them, go through; its lifecycle and health services are its supervisor's alone.
//! Every refusal names the `x-baton-plugin` header, the plugin, and what is served.

use std::collections::BTreeSet;

use tonic::Status;

use crate::api::service_name::{is_service_name, supervisors_own_service};
use crate::calls::plugin_set::PluginSet;
use crate::io::printable::printable;

/// The metadata key that names the plugin a forwarded call is for.
pub const PLUGIN_METADATA_KEY: &str = "x-baton-plugin";

/// Reflection answers questions about the described services; clients calling by name
/// (`baton ctl call`, grpcurl) need it.
const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
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
/// clients do) should not be sent looking. `serving` is what the serving generation's
/// `Describe` lists, if one serves.
pub(super) fn supervisors_own(
    plugin: &str,
    service: &str,
    serving: Option<&BTreeSet<String>>,
) -> Option<Status> {
    let what = supervisors_own_service(service)?;
    Some(Status::permission_denied(format!(
        "plugin {plugin}: {service} is {what}, which only its supervisor calls; the daemon \
         forwards only the services a plugin's Describe lists (and gRPC reflection): {}",
        described(serving)
    )))
}

/// The refusal of a call to `path_and_query` for a generation whose `Describe` lists
/// `services`; `None` when it describes the service, or the call is for reflection.
/// Whole on its own, whatever was checked before: a path that is no method's, a
/// service name of any other shape, and the supervisor's own services are refused
/// here too.
pub(crate) fn undescribed(
    plugin: &str,
    services: &BTreeSet<String>,
    path_and_query: &str,
    plugins: &PluginSet,
) -> Option<Status> {
    let Some(service) = service_of(path_and_query).filter(|s| is_service_name(s)) else {
        return Some(not_a_method(plugin, path_and_query));
    };
    if let Some(denied) = supervisors_own(plugin, service, Some(services)) {
        return Some(denied);
    }
    if services.contains(service) || REFLECTION.contains(&service) {
        return None;
    }
    Some(Status::unimplemented(format!(
        "plugin {plugin} does not serve {}: {}; {PLUGIN_METADATA_KEY} names the plugin a call \
         is for ({})",
        cut(service),
        described(Some(services)),
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
        crate::io::printable::quoted(name, 64),
        listed(plugins.names().iter().map(String::as_str)),
        served_by(wanted, plugins)
    ))
}

/// What the serving generation's `Describe` lists, for a message.
fn described(serving: Option<&BTreeSet<String>>) -> String {
    match serving {
        None => "its services are known once it serves".to_owned(),
        Some(services) if services.is_empty() => {
            "its Describe lists no application services".to_owned()
        }
        Some(services) => format!(
            "its Describe lists {}",
            listed(services.iter().map(String::as_str))
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
    fn a_described_only_channel_refuses_on_its_own() {
        let services: BTreeSet<String> = ["kv.v1.KV".to_owned()].into();
        let plugins = PluginSet::default();
        let judge = |path: &str| undescribed("p", &services, path, &plugins);
        assert!(judge("/kv.v1.KV/Get").is_none());
        assert!(judge("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").is_none());
        for odd in [
            "/kv.v1.KV/Get?x=1",
            "/kv.v1.KV/a/../../baton.plugin.v1.Plugin/Shutdown",
            "kv.v1.KV/Get",
            "/",
            "/kv.v1.KV%2F/Get",
            "/kv v1.KV/Get",
            "/kv..KV/Get",
            "/1kv.KV/Get",
        ] {
            let refused = judge(odd).unwrap_or_else(|| panic!("{odd} let through"));
            assert_eq!(refused.code(), tonic::Code::Unimplemented, "{odd}");
        }
        // Denied even to a generation that (wrongly) describes them.
        let own: BTreeSet<String> = ["baton.plugin.v1.Plugin".to_owned()].into();
        let denied =
            undescribed("p", &own, "/baton.plugin.v1.Plugin/Restore", &plugins).expect("denied");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let denied =
            undescribed("p", &services, "/grpc.health.v1.Health/Check", &plugins).expect("denied");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(is_service_name("mydb.trigger.v1.Trigger") && is_service_name("_x.Y_1"));
        assert!(!is_service_name("") && !is_service_name("a.") && !is_service_name("a-b"));
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
