//! When a trigger fires, as InfluxDB 3's trigger specifications say it: `table:NAME`,
//! `all_tables`, `every:D` (ms, s, m, h; 100 ms to a year), `cron:EXPR` (with seconds,
//! UTC) and `request:PATH`.

use std::str::FromStr;
use std::time::Duration;

/// The longest `every:` interval, as InfluxDB's: a year.
const MAX_EVERY: Duration = Duration::from_secs(365 * 24 * 3600);

/// When a trigger fires.
#[derive(Debug, Clone)]
pub enum Spec {
    Table(String),
    AllTables,
    Every(Duration),
    Cron(Box<cron::Schedule>),
    Request(String),
}

impl Spec {
    /// From the config's `on`; the error says what is accepted.
    pub fn parse(on: &str) -> Result<Self, String> {
        let (kind, rest) = on.split_once(':').unwrap_or((on, ""));
        match kind {
            "all_tables" if rest.is_empty() => Ok(Self::AllTables),
            "table" if !rest.is_empty() => Ok(Self::Table(rest.to_owned())),
            "every" => parse_every(rest).map(Self::Every),
            "cron" => cron::Schedule::from_str(rest)
                .map(|s| Self::Cron(Box::new(s)))
                .map_err(|e| {
                    format!(
                        "{rest:?} is not a cron expression (SEC MIN HOUR DAY MONTH WEEKDAY): {e}"
                    )
                }),
            "request" if !rest.is_empty() && !rest.starts_with('/') => {
                Ok(Self::Request(rest.to_owned()))
            }
            _ => Err(format!(
                "{on:?} is not a trigger: use table:NAME, all_tables, every:10s, cron:EXPR or request:PATH"
            )),
        }
    }

    pub(crate) fn fires_on_writes(&self) -> bool {
        matches!(self, Self::Table(_) | Self::AllTables)
    }
}

fn parse_every(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not an interval such as 10s, 5m, 1h or 500ms"))?;
    let seconds_per_unit = match unit {
        "ms" => None,
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    // Checked: `n * 3600` from a request would panic (debug) or wrap (release), and an
    // interval past a year overflows `Instant + every` in the timer, which then never fires.
    let every = match seconds_per_unit {
        None => Some(Duration::from_millis(n)),
        Some(k) => n.checked_mul(k).map(Duration::from_secs),
    }
    .filter(|every| *every <= MAX_EVERY)
    .ok_or_else(|| format!("{text:?} is too long (at most a year, 8760h)"))?;
    if every < Duration::from_millis(100) {
        return Err(format!("{text:?} is too often (at least 100ms)"));
    }
    Ok(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_specs_and_their_errors() {
        assert!(matches!(Spec::parse("table:cpu"), Ok(Spec::Table(t)) if t == "cpu"));
        assert!(matches!(Spec::parse("all_tables"), Ok(Spec::AllTables)));
        assert!(
            matches!(Spec::parse("every:10s"), Ok(Spec::Every(d)) if d == Duration::from_secs(10))
        );
        assert!(
            matches!(Spec::parse("every:2m"), Ok(Spec::Every(d)) if d == Duration::from_secs(120))
        );
        assert!(matches!(
            Spec::parse("cron:0 */5 * * * *"),
            Ok(Spec::Cron(_))
        ));
        assert!(matches!(Spec::parse("every:8760h"), Ok(Spec::Every(d)) if d == MAX_EVERY));
        assert!(matches!(Spec::parse("request:summary"), Ok(Spec::Request(p)) if p == "summary"));
        for (bad, says) in [
            ("every:10", "the unit must be"),
            ("every:5ms", "too often"),
            ("every:18446744073709551615s", "too long"),
            ("every:18446744073709551615h", "too long"),
            ("every:5124095576030432m", "too long"),
            ("every:8761h", "too long"),
            ("cron:nope", "not a cron expression"),
            ("request:/x", "is not a trigger"),
            ("tables", "is not a trigger"),
        ] {
            let err = Spec::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
