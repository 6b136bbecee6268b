//! Figures, each beside the baseline measured in the same run: a human table and one
//! JSON line.

use serde_json::json;

/// One figure.
pub struct Row {
    pub group: &'static str,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    /// The same figure through the baseline path, in the same unit.
    pub baseline: Option<f64>,
    /// The target in words, and whether this run met it.
    pub target: Option<(String, bool)>,
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
    pub fn target(mut self, words: impl Into<String>, met: bool) -> Self {
        self.target = Some((words.into(), met));
        self
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
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| group | figure | value | baseline | ratio | target | met |\n|---|---|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let (target, met) = match &r.target {
            Some((t, true)) => (t.as_str(), "yes"),
            Some((t, false)) => (t.as_str(), "**NO**"),
            None => ("", ""),
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
pub fn json_line(mode: &str, rows: &[Row]) -> String {
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
                "target": r.target.as_ref().map(|t| &t.0),
                "met": r.target.as_ref().map(|t| t.1),
            })
        })
        .collect();
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
