//! `GET /metrics`: well-formed Prometheus text whose counters equal what happened.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use baton_proto::host::{PluginState, ReloadRequest};
use baton_tests::{TestHost, plugin, run_refused_config, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A series' labels, sorted by name.
type Labels = Vec<(String, String)>;

/// A parsed exposition: every series by name and sorted labels, and every family's type.
#[derive(Debug, Default)]
struct Exposition {
    samples: BTreeMap<(String, Labels), f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of one series.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Every series named `name` whose labels include `with`.
    fn series(&self, name: &str, with: &[(&str, &str)]) -> Vec<(&[(String, String)], f64)> {
        self.samples
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|((_, labels), v)| (labels.as_slice(), *v))
            .collect()
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    is_name(s) && !s.contains(':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{k="v",...}` at the start of `s`: the labels and the rest of `s`.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = rest.split_once("=\"").ok_or("expected key=\"")?;
        if !is_label_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.iter().any(|(k, _)| k == key) {
            return Err(format!("label {key} twice"));
        }
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &str, types: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if let Some((family, _)) = types.get_key_value(name) {
        return Some(family);
    }
    for (family, kind) in types {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["_sum", "_count", "_created"],
            _ => &[],
        };
        if suffixes
            .iter()
            .any(|s| name.strip_suffix(s) == Some(family.as_str()))
        {
            return Some(family);
        }
    }
    None
}

/// A strict parser of the Prometheus text format (and of OpenMetrics text, which adds
/// `# UNIT` and a closing `# EOF`).
fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helps = BTreeMap::new();
    let mut seen_samples: BTreeMap<String, ()> = BTreeMap::new();
    let body = text
        .strip_suffix('\n')
        .ok_or("does not end with a newline")?;
    let mut lines = body.split('\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name) = (parts.next(), parts.next());
            let rest = parts.next();
            match (keyword, name) {
                (Some("EOF"), None) if lines.peek().is_none() => {}
                (Some("HELP"), Some(name)) if is_name(name) && rest.is_some() => {
                    if helps.insert(name.to_owned(), ()).is_some() {
                        return Err(fail("second HELP"));
                    }
                }
                (Some("TYPE"), Some(name)) if is_name(name) => {
                    let kind = rest.ok_or_else(|| fail("TYPE without a type"))?;
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "untyped",
                        "unknown",
                        "info",
                        "stateset",
                        "gaugehistogram",
                    ]
                    .contains(&kind)
                    {
                        return Err(fail("unknown type"));
                    }
                    if seen_samples.contains_key(name) {
                        return Err(fail("TYPE after the family's samples"));
                    }
                    if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(fail("second TYPE"));
                    }
                }
                (Some("UNIT"), Some(name)) if is_name(name) => {
                    let unit = rest.ok_or_else(|| fail("UNIT without a unit"))?;
                    if !name.ends_with(&format!("_{unit}")) {
                        return Err(fail("a family's name must end with its unit"));
                    }
                }
                _ => return Err(fail("malformed comment")),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| fail("no value"))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(fail("bad metric name"));
        }
        let (mut labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(|e| fail(&e))?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| fail("no space before the value"))?;
        let mut fields = rest.split(' ');
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| fail("bad value"))?;
        if let Some(ts) = fields.next()
            && ts.parse::<f64>().is_err()
        {
            return Err(fail("bad timestamp"));
        }
        if fields.next().is_some() {
            return Err(fail("trailing fields"));
        }
        let family = family_of(name, &out.types).ok_or_else(|| fail("no TYPE for this name"))?;
        seen_samples.insert(family.to_owned(), ());
        labels.sort();
        if out
            .samples
            .insert((name.to_owned(), labels), value)
            .is_some()
        {
            return Err(fail("duplicate series"));
        }
    }
    check_histograms(&out)?;
    Ok(out)
}

/// Buckets are cumulative and the `+Inf` bucket equals `_count`.
fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (family, _) in e.types.iter().filter(|(_, t)| *t == "histogram") {
        let counts = e.series(&format!("{family}_count"), &[]);
        for (labels, count) in counts {
            let with: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut buckets: Vec<(f64, f64)> = e
                .series(&format!("{family}_bucket"), &with)
                .into_iter()
                .filter_map(|(l, v)| {
                    let le = l.iter().find(|(k, _)| k == "le")?;
                    Some((parse_value(&le.1)?, v))
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !buckets.windows(2).all(|w| w[0].1 <= w[1].1) {
                return Err(format!("{family}{labels:?}: buckets not cumulative"));
            }
            if buckets.last() != Some(&(f64::INFINITY, count)) {
                return Err(format!("{family}{labels:?}: +Inf bucket is not _count"));
            }
        }
    }
    Ok(())
}

/// One HTTP GET over a plain socket: the status line, the headers (lower-cased) and the body.
fn http_get(addr: &str, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("read the response");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .expect("a response with headers");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

/// The metrics endpoint's address, from the host's log line.
async fn metrics_addr(host: &TestHost) -> String {
    wait_until(
        "the host logs its metrics address",
        Duration::from_secs(10),
        || async {
            let log = host.log();
            let (_, after) = log.split_once("metrics: serving http://")?;
            Some(after.split_once("/metrics")?.0.to_owned())
        },
    )
    .await
}

#[tokio::test]
async fn metrics_count_exactly_the_calls_reloads_and_restarts_that_happened() {
    let host = TestHost::start(&format!(
        "metrics_addr = \"127.0.0.1:0\"\n\n{}{}",
        plugin("counter", "counter", &[], "reload = \"manual\""),
        plugin("echo", "echo", &[], "reload = \"manual\""),
    ))
    .await;
    let addr = metrics_addr(&host).await;
    host.serving("counter", Duration::from_secs(10)).await;
    host.serving("echo", Duration::from_secs(10)).await;

    for _ in 0..5 {
        host.call_text("counter", "incr", "k").await;
    }
    for _ in 0..2 {
        host.call_text("counter", "get", "k").await;
    }
    for _ in 0..3 {
        let err = host
            .invoke("counter", "nope", "x")
            .await
            .expect_err("no such method");
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    }
    let err = host
        .invoke("counter", "incr", "")
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for i in 0..4 {
        host.call_text("echo", "echo", &i.to_string()).await;
    }

    let reloaded = host
        .client()
        .reload(ReloadRequest {
            plugin: "counter".into(),
        })
        .await
        .expect("reload")
        .into_inner();
    assert_eq!(reloaded.generation, 2);
    let before = host.serving("counter", Duration::from_secs(10)).await;
    kill(Pid::from_raw(before.pid as i32), Signal::SIGKILL).expect("kill counter");
    wait_until("counter is back", Duration::from_secs(10), || async {
        let s = host.status("counter").await;
        (s.restarts == 1 && s.state == PluginState::Serving as i32).then_some(())
    })
    .await;
    host.call_text("counter", "incr", "k").await;

    // Lifecycle metrics follow the event stream: wait for the restart to show.
    let scrape = || {
        let (status, headers, body) = http_get(&addr, "/metrics", None);
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        assert!(
            headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{headers}"
        );
        parse(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"))
    };
    let plugin_label = |p: &'static str| [("plugin", p)];
    let m = wait_until(
        "the restart shows in the metrics",
        Duration::from_secs(5),
        || async {
            let m = scrape();
            (m.get("baton_restarts_total", &plugin_label("counter")) == Some(1.0)).then_some(m)
        },
    )
    .await;

    let calls = |p: &str, method: &str, code: &str| {
        m.get(
            "baton_calls_total",
            &[("plugin", p), ("method", method), ("code", code)],
        )
    };
    assert_eq!(calls("counter", "incr", "Ok"), Some(6.0));
    assert_eq!(calls("counter", "get", "Ok"), Some(2.0));
    assert_eq!(calls("counter", "nope", "Unimplemented"), Some(3.0));
    assert_eq!(calls("counter", "incr", "InvalidArgument"), Some(1.0));
    assert_eq!(calls("echo", "echo", "Ok"), Some(4.0));
    assert_eq!(
        m.series("baton_calls_total", &[]).len(),
        5,
        "no other call series: {:?}",
        m.series("baton_calls_total", &[])
    );
    let count = |name: &str, p: &'static str| m.get(name, &plugin_label(p));
    assert_eq!(
        count("baton_call_duration_seconds_count", "counter"),
        Some(12.0)
    );
    assert_eq!(
        count("baton_call_duration_seconds_count", "echo"),
        Some(4.0)
    );

    assert_eq!(count("baton_reloads_total", "counter"), Some(1.0));
    assert_eq!(count("baton_reloads_total", "echo"), Some(0.0));
    assert_eq!(count("baton_restarts_total", "counter"), Some(1.0));
    assert_eq!(count("baton_restarts_total", "echo"), Some(0.0));
    assert_eq!(count("baton_crashes_total", "counter"), Some(1.0));
    assert_eq!(count("baton_crashes_total", "echo"), Some(0.0));
    assert!(m.series("baton_rollbacks_total", &[]).is_empty());
    assert_eq!(
        count("baton_handover_hold_seconds_count", "counter"),
        Some(1.0)
    );
    assert_eq!(
        count("baton_handover_duration_seconds_count", "counter"),
        Some(1.0)
    );
    assert!(count("baton_handover_duration_seconds_sum", "counter").is_some_and(|s| s > 0.0));
    assert_eq!(count("baton_plugin_generation", "counter"), Some(3.0));
    assert_eq!(count("baton_plugin_generation", "echo"), Some(1.0));
    assert_eq!(count("baton_plugin_up", "counter"), Some(1.0));
    assert_eq!(count("baton_plugin_up", "echo"), Some(1.0));
    for (name, kind) in [
        ("baton_calls_total", "counter"),
        ("baton_call_duration_seconds", "histogram"),
        ("baton_plugin_up", "gauge"),
    ] {
        assert_eq!(m.types.get(name).map(String::as_str), Some(kind), "{name}");
    }

    // A scraper that asks for OpenMetrics gets it, as strictly well-formed.
    let (status, headers, body) = http_get(
        &addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{headers}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let om = parse(&body).unwrap_or_else(|e| panic!("not OpenMetrics text: {e}\n{body}"));
    assert_eq!(
        om.types.get("baton_calls").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        om.get(
            "baton_calls_total",
            &[
                ("plugin", "counter"),
                ("method", "nope"),
                ("code", "Unimplemented")
            ]
        ),
        Some(3.0)
    );

    let (status, _, _) = http_get(&addr, "/", None);
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _, _) = http_get(&addr, "/metricsx", None);
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
}

fn run_with(config: &str) -> (Option<i32>, String) {
    // The socket line first, so the file's line numbers are what the test expects.
    run_refused_config("baton.toml", &format!("socket = \"baton.sock\"\n{config}"))
}

#[test]
fn a_public_metrics_address_must_be_asked_for_and_a_taken_port_is_named() {
    let (code, err) = run_with("metrics_addr = \"0.0.0.0:9464\"\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("baton.toml:2:1: field `metrics_addr`")
            && err.contains("metrics_public = true"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("its address").port();
    let (code, err) = run_with(&format!("metrics_addr = \"127.0.0.1:{port}\"\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot serve metrics on 127.0.0.1:{port} (metrics_addr)"
        )),
        "{err}"
    );
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 2\n";
    assert!(parse(good).is_ok(), "{:?}", parse(good));
    for bad in [
        "a_total 1\n",                            // no TYPE
        "# TYPE a counter\na_total 1",            // no final newline
        "# TYPE a gauge\na{x=\"1\"} one\n",       // bad value
        "# TYPE a gauge\na{x=1} 1\n",             // unquoted label value
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n", // label twice
        "# TYPE a gauge\na 1\na 2\n",             // duplicate series
        "# TYPE a gauge\na 1\n# TYPE a gauge\n",  // second TYPE
        "# TYPE a gauge\n\na 1\n",                // empty line
        "# TYPE a gauge\n# nonsense\na 1\n",      // stray comment
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
