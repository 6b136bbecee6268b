//! Property tests of the parsers a plugin or a user controls: the handshake line (any
//! bytes a plugin prints) and the config file (anything an operator writes). None may
//! panic, and every error must point inside the input.

use std::path::Path;

use proptest::prelude::*;

use crate::config::{Config, ConfigError};
use crate::launch::check_handshake;

/// Lines near the handshake format, where the interesting mistakes are.
fn handshake_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        ("[a-z|]{0,8}", "[0-9a-z]{0,3}", "[a-z]{0,5}", ".{0,40}")
            .prop_map(|(a, v, n, p)| format!("{a}|{v}|{n}|{p}")),
        ".{0,40}".prop_map(|p| format!("baton|1|unix|{p}")),
    ]
}

/// TOML-ish text built from config keys, values of every type, and noise.
fn config_like() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("socket"),
        Just("mode"),
        Just("command"),
        Just("args"),
        Just("call_timeout_ms"),
        Just("restart"),
        Just("max_crashes"),
        Just("watch"),
        Just("reload"),
        Just("cpus"),
        Just("bogus"),
    ];
    let value = prop_oneof![
        Just("\"x\"".to_owned()),
        Just("7".to_owned()),
        Just("-1".to_owned()),
        Just("[\"a\", 1]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("\"dev\"".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("[\"0-3\", 1]".to_owned()),
        Just("[\"7-2\", \"-\", \"1,,2\"]".to_owned()),
        ".{0,6}".prop_map(|s| s),
    ];
    let line = prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "[a-z.]{0,20}".prop_map(|t| format!("[plugins.{t}]")),
        Just("[plugins.counter.restart]".to_owned()),
        ".{0,20}".prop_map(|s| s),
    ];
    proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #[test]
    fn handshake_lines_never_panic(line in handshake_like()) {
        let _ = check_handshake(&line, Path::new("/tmp/b/p.1.sock"));
    }

    #[test]
    fn config_errors_never_panic_and_point_inside_the_file(text in config_like()) {
        if let Err(e) = Config::parse(&text, Path::new("fuzz.toml")) {
            for one in e.each() {
                if let ConfigError::Invalid { line, .. } = one {
                    let lines = text.lines().count().max(1);
                    prop_assert!(*line <= lines + 1, "line {} of a {}-line file", line, lines);
                }
            }
        }
    }
}
