//! A request trigger's plugin gets the request's headers without the caller's
//! credentials: every call to `/api/v3/engine/` carries an admin token when tokens are
//! checked, and a plugin holding one could do whatever an admin can.

use std::time::Duration;

use crate::common::{http, http_full, prepare, start_with_plugin_dir, upload, wait_until};

/// A tsdb plugin (not InfluxDB's API: it sees the call as tsdb sends it) answering with
/// the headers it was given.
const ECHO: &str = r#""""Answers a request with the headers tsdb sent it, as JSON."""
import json

from tsdb_plugin import pb, rpc

import baton_plugin


class Echo(baton_plugin.Plugin, rpc.TriggerServicer):
    def describe(self):
        return baton_plugin.Description("header-echo", "1")

    def OnRequest(self, request, context):
        return pb.HttpResponse(status=200, body=json.dumps(dict(request.headers)).encode())


if __name__ == "__main__":
    echo = Echo()
    baton_plugin.serve(echo, services=[(rpc.add_TriggerServicer_to_server, echo)])
"#;

#[test]
fn a_request_plugin_never_gets_the_callers_credentials() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(prepared) = prepare(dir.path()) else {
        return;
    };
    let db = start_with_plugin_dir(dir.path(), &prepared);
    let (status, body) = upload(db.addr, "echo_headers.py", ECHO);
    assert_eq!(status, 200, "{body}");
    let trigger = serde_json::json!({
        "db": "metrics", "plugin_filename": "echo_headers.py", "trigger_name": "echo",
        "trigger_specification": "request:echo",
    });
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/configure/processing_engine_trigger",
        &trigger.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let sent = [
        "authorization: Bearer apiv3_the-callers-token",
        "proxy-authorization: Basic dXNlcjpwYXNz",
        "x-custom: kept",
    ];
    let seen = wait_until("the plugin answers", Duration::from_secs(60), || {
        let (status, _, body) = http_full(db.addr, "GET", "/api/v3/engine/echo", &sent, "");
        (status == 200).then_some(body)
    });
    let headers: serde_json::Value = serde_json::from_str(&seen).expect("the plugin's JSON");
    assert_eq!(headers["x-custom"], "kept", "{headers}");
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(headers.get("proxy-authorization").is_none(), "{headers}");
}
