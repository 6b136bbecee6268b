//! Figures, each beside the baseline measured in the same run: a human table and one
//! JSON line.

use serde_json::json;

use crate::Mode;

/// One figure.
pub struct Row {
    pub group: &'static str,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    /// The same figure through the baseline path, in the same unit.
    pub baseline: Option<f64>,
    /// The target, and whether this run met it.
    pub target: Option<Target>,
}

/// What a figure should be.
pub struct Target {
    pub words: String,
    pub met: bool,
    /// Whether a quick run judges it: true for what holds at any size (no failed call),
    /// false for speed and size figures, which a quick run is too small to measure.
    pub in_quick_runs: bool,
}

/// A row's target as a run judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    NotJudged,
}

impl Row {
    pub fn new(
        group: &'static str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            group,
            figure: figure.into(),
            value,
            unit,
            baseline: None,
            target: None,
        }
    }
    pub fn baseline(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }
    /// A speed or size target: judged in full runs only.
    pub fn target(mut self, words: impl Into<String>, met: bool) -> Self {
        self.target = Some(Target {
            words: words.into(),
            met,
            in_quick_runs: false,
        });
        self
    }
    /// A target that holds whatever the run's size (a count of failures): judged in
    /// quick runs too.
    pub fn target_at_any_size(mut self, words: impl Into<String>, met: bool) -> Self {
        self.target = Some(Target {
            words: words.into(),
            met,
            in_quick_runs: true,
        });
        self
    }
    /// The target's verdict in a run of `mode`; `None` without a target.
    pub fn verdict(&self, mode: Mode) -> Option<Verdict> {
        self.target.as_ref().map(|t| match (t.met, mode) {
            (_, Mode::Quick) if !t.in_quick_runs => Verdict::NotJudged,
            (true, _) => Verdict::Met,
            (false, _) => Verdict::Missed,
        })
    }
    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.value / b)
    }
}

fn number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A Markdown table: readable in a terminal, and pasted as is into docs/performance.md.
pub fn table(mode: Mode, rows: &[Row]) -> String {
    let mut out = String::from(
        "| group | figure | value | baseline | ratio | target | met |\n|---|---|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let target = r.target.as_ref().map_or("", |t| t.words.as_str());
        let met = match r.verdict(mode) {
            Some(Verdict::Met) => "yes",
            Some(Verdict::Missed) => "**NO**",
            Some(Verdict::NotJudged) => "— (quick: not judged)",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} |\n",
            r.group,
            r.figure,
            number(r.value),
            r.unit,
            r.baseline.map(number).unwrap_or_default(),
            r.ratio().map(|x| format!("{x:.2}×")).unwrap_or_default(),
            target,
            met
        ));
    }
    out
}

/// Everything on one line, for tools.
pub fn json_line(mode: Mode, rows: &[Row]) -> String {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "group": r.group,
                "figure": r.figure,
                "value": r.value,
                "unit": r.unit,
                "baseline": r.baseline,
                "ratio": r.ratio(),
                "target": r.target.as_ref().map(|t| &t.words),
                // null both without a target and for one this run does not judge.
                "met": match r.verdict(mode) {
                    Some(Verdict::Met) => Some(true),
                    Some(Verdict::Missed) => Some(false),
                    Some(Verdict::NotJudged) | None => None,
                },
            })
        })
        .collect();
    let mode = match mode {
        Mode::Quick => "quick",
        Mode::Full => "full",
    };
    json!({ "bench": "baton", "mode": mode, "rows": rows }).to_string()
}

/// The `p`-th quantile (0..=1) of sorted values, by nearest rank.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sorts in place and returns the slice, for quantiles.
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        vec![
            Row::new("latency", "p50", 9.0, "µs")
                .baseline(3.0)
                .target("≤ 1.10 × (a)", false),
            Row::new("latency", "p99", 4.0, "µs").target("≤ 5 µs", true),
            Row::new("reload", "failed calls", 2.0, "calls").target_at_any_size("0", false),
            Row::new("scale", "start", 1.0, "ms"),
        ]
    }

    #[test]
    fn a_quick_run_judges_only_the_targets_that_hold_at_any_size() {
        let table = table(Mode::Quick, &rows());
        let lines: Vec<&str> = table.lines().skip(2).collect();
        assert!(
            lines[0].ends_with("| ≤ 1.10 × (a) | — (quick: not judged) |"),
            "{table}"
        );
        assert!(
            lines[1].ends_with("| ≤ 5 µs | — (quick: not judged) |"),
            "{table}"
        );
        assert!(lines[2].ends_with("| 0 | **NO** |"), "{table}");
        assert!(lines[3].ends_with("|  |  |"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&json_line(Mode::Quick, &rows())).expect("JSON");
        let met: Vec<_> = json["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["met"].clone())
            .collect();
        assert_eq!(met, [json!(null), json!(null), json!(false), json!(null)]);
    }

    #[test]
    fn a_full_run_judges_every_target() {
        let table = table(Mode::Full, &rows());
        let lines: Vec<&str> = table.lines().skip(2).collect();
        assert!(lines[0].ends_with("| **NO** |"), "{table}");
        assert!(lines[1].ends_with("| yes |"), "{table}");
        assert!(lines[2].ends_with("| **NO** |"), "{table}");
        assert!(!table.contains("not judged"), "{table}");
    }
}
