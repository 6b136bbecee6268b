//! How `baton ctl` shows what the host answers: tables and lines for people, with
//! local wall-clock times and ages, and JSON (RFC 3339 times) for scripts.

use baton_host::daemon::printable::printable;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_proto::host::{Event, LogLine, PluginState, PluginStatus};
use chrono::{DateTime, Local, SecondsFormat};
use serde_json::{Value, json};

pub(crate) fn state_name(state: i32) -> &'static str {
    match PluginState::try_from(state) {
        Ok(PluginState::Starting) => "starting",
        Ok(PluginState::Serving) => "serving",
        Ok(PluginState::HandingOver) => "handing-over",
        Ok(PluginState::Crashed) => "crashed",
        Ok(PluginState::Failed) => "failed",
        Ok(PluginState::Stopping) => "stopping",
        Ok(PluginState::Stopped) => "stopped",
        _ => "unknown",
    }
}

/// Unix milliseconds as local time; `None` for 0 (not known) or out of range.
fn local(unix_ms: u64) -> Option<DateTime<Local>> {
    let ms = i64::try_from(unix_ms).ok().filter(|&ms| ms > 0)?;
    DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&Local))
}

/// Local wall-clock time to the millisecond, as logs and events are shown.
pub(crate) fn wall_clock(unix_ms: u64) -> String {
    local(unix_ms).map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    )
}

/// RFC 3339 with the local offset, for JSON; null when not known.
pub(crate) fn rfc3339(unix_ms: u64) -> Value {
    local(unix_ms).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, false))
    })
}

/// How long ago `unix_ms` was, in the largest unit that fits ("3m", "2h").
pub(crate) fn age(unix_ms: u64) -> String {
    let then = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let secs = SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The last error with its age, as "3m ago: ..."; empty when there is none.
pub(crate) fn last_error(p: &PluginStatus) -> String {
    let error = printable(&p.last_error);
    match (&*error, p.last_error_unix_ms) {
        ("", _) => String::new(),
        (error, 0) => error.to_owned(),
        (error, at) => format!("{} ago: {error}", age(at)),
    }
}

pub(crate) fn human_duration(ms: u64) -> String {
    match ms / 1000 {
        0 if ms == 0 => "-".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A latency in the unit that reads best; "-" for none.
pub(crate) fn latency(us: u64) -> String {
    match us {
        0 => "-".into(),
        us if us < 1000 => format!("{us}µs"),
        us if us < 1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        us => format!("{:.2}s", us as f64 / 1e6),
    }
}

pub(crate) fn rss(bytes: u64) -> String {
    if bytes == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}M", bytes as f64 / f64::from(1u32 << 20))
    }
}

pub(crate) fn pid(pid: u32) -> String {
    if pid == 0 {
        "-".to_owned()
    } else {
        pid.to_string()
    }
}

/// At most `n` characters of `text`, on one line; a longer text is cut at a word's end
/// where one is near, and ends with "…" so that a cut is never read as the whole.
pub(crate) fn clip(text: &str, n: usize) -> String {
    let one_line: Vec<char> = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.len() <= n {
        return one_line.into_iter().collect();
    }
    if n == 0 {
        return String::new();
    }
    let room = n - 1;
    // A space in the last third of the room: cut there rather than inside a word.
    let end = one_line[..=room.min(one_line.len() - 1)]
        .iter()
        .rposition(|c| *c == ' ')
        .filter(|&at| at * 3 >= room * 2)
        .unwrap_or(room);
    let mut clipped: String = one_line[..end].iter().collect();
    clipped.truncate(clipped.trim_end().len());
    clipped.push('…');
    clipped
}

pub(crate) fn status_json(p: &PluginStatus) -> Value {
    json!({
        "name": p.name,
        "state": state_name(p.state),
        "generation": p.generation,
        "pid": (p.pid != 0).then_some(p.pid),
        "uptime_ms": p.uptime_ms,
        "restarts": p.restarts,
        "reloads": p.reloads,
        "rss_bytes": (p.rss_bytes != 0).then_some(p.rss_bytes),
        "cpu_percent": p.cpu_percent,
        "calls": p.calls,
        "errors": p.errors,
        "p99_latency_us": (p.p99_latency_us != 0).then_some(p.p99_latency_us),
        "last_event": p.last_event,
        "last_error": p.last_error,
        "last_error_at": rfc3339(p.last_error_unix_ms),
        "version": p.plugin_version,
        "methods": p.methods,
        "socket": p.socket,
    })
}

pub(crate) fn print_list(plugins: &[PluginStatus]) {
    println!(
        "{:<20} {:<13} {:>4} {:>8} {:>8}  LAST ERROR",
        "PLUGIN", "STATE", "GEN", "PID", "RESTARTS"
    );
    for p in plugins {
        println!(
            "{:<20} {:<13} {:>4} {:>8} {:>8}  {}",
            p.name,
            state_name(p.state),
            p.generation,
            pid(p.pid),
            p.restarts,
            last_error(p)
        );
    }
}

pub(crate) fn print_status_table(plugins: &[PluginStatus]) {
    println!(
        "{:<16} {:<12} {:>4} {:>8} {:>8} {:>8} {:>7} {:>8} {:>6} {:>8} {:>6}  LAST EVENT",
        "PLUGIN",
        "STATE",
        "GEN",
        "PID",
        "UPTIME",
        "RESTARTS",
        "RELOADS",
        "RSS",
        "CPU%",
        "CALLS",
        "ERRORS"
    );
    for p in plugins {
        println!(
            "{:<16} {:<12} {:>4} {:>8} {:>8} {:>8} {:>7} {:>8} {:>6.1} {:>8} {:>6}  {}",
            p.name,
            state_name(p.state),
            p.generation,
            pid(p.pid),
            human_duration(p.uptime_ms),
            p.restarts,
            p.reloads,
            rss(p.rss_bytes),
            p.cpu_percent,
            p.calls,
            p.errors,
            clip(&p.last_event, 60)
        );
    }
}

pub(crate) fn event_line(e: &Event) -> String {
    format!(
        "{} {} gen={} {}: {}",
        wall_clock(e.unix_ms),
        e.plugin,
        e.generation,
        e.kind,
        printable(&e.message)
    )
}

pub(crate) fn event_json(e: &Event) -> Value {
    json!({
        "time": rfc3339(e.unix_ms),
        "unix_ms": e.unix_ms,
        "plugin": e.plugin,
        "generation": e.generation,
        "kind": e.kind,
        "message": e.message,
        "hold_us": e.hold_us,
        "state_bytes": e.state_bytes,
        "duration_us": e.duration_us,
        "drain_us": e.drain_us,
        "precopy_bytes": e.precopy_bytes,
        "final_bytes": e.final_bytes,
        "precopy": e.precopy,
    })
}

pub(crate) fn log_line(l: &LogLine) -> String {
    format!(
        "{} gen={} {}: {}",
        wall_clock(l.unix_ms),
        l.generation,
        l.stream,
        printable(&l.text)
    )
}

pub(crate) fn log_json(l: &LogLine) -> Value {
    json!({
        "time": rfc3339(l.unix_ms),
        "unix_ms": l.unix_ms,
        "generation": l.generation,
        "stream": l.stream,
        "text": l.text,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_clipped_text_ends_at_a_word_with_an_ellipsis() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly ten", 11), "exactly ten");
        assert_eq!(
            clip("reload rolled back: build failed", 20),
            "reload rolled back:…"
        );
        // No space near the end: cut inside the word, and say so.
        assert_eq!(clip("abcdefghijklmnop", 8), "abcdefg…");
        assert_eq!(clip("line\nbreak and more", 12), "line break…");
        assert_eq!(clip("abc", 0), "");
        for n in 1..40 {
            let c = clip("the new build never answered its health check in time", n);
            assert!(c.chars().count() <= n, "{n}: {c}");
        }
    }

    use super::*;

    #[test]
    fn times_read_as_local_wall_clock_and_rfc_3339() {
        let ms = 1_700_000_000_123;
        let shown = wall_clock(ms);
        assert_eq!(shown.len(), "2023-11-14 22:13:20.123".len(), "{shown}");
        assert!(shown.ends_with(".123"), "{shown}");
        let Value::String(json) = rfc3339(ms) else {
            panic!("a string")
        };
        let parsed = DateTime::parse_from_rfc3339(&json).expect("RFC 3339");
        assert_eq!(parsed.timestamp_millis(), ms as i64);
        assert_eq!(rfc3339(0), Value::Null);
        assert_eq!(wall_clock(0), "-");
    }

    #[test]
    fn ages_and_latencies_read_short() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        assert_eq!(age(now - 5_000), "5s");
        assert_eq!(age(now - 185_000), "3m");
        assert_eq!(age(now - 3 * 86_400_000), "3d");
        assert_eq!(latency(85), "85µs");
        assert_eq!(latency(1_240), "1.2ms");
        assert_eq!(latency(0), "-");
    }
}
