//! InfluxDB line protocol: `measurement[,tag=value...] field=value[,...] [timestamp]`,
//! one point per line, parsed whole before anything is stored, so that a batch with a
//! bad line is refused with that line and column and nothing of it is written.

use std::collections::BTreeMap;

/// One field's value, as the protocol types it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `1.5`, `1`, `-2e3`
    Float(f64),
    /// `1i`
    Integer(i64),
    /// `1u`
    Unsigned(u64),
    /// `"text"`
    Text(String),
    /// `t`, `true`, `F`, `false`, ...
    Boolean(bool),
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub fields: BTreeMap<String, FieldValue>,
    /// Nanoseconds since the Unix epoch; `None` when the line has no timestamp.
    pub time_ns: Option<i64>,
    /// The line it came from (1-based), for errors found when it is stored.
    pub line: usize,
}

/// Where a line is wrong: 1-based line and column, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {what}")]
pub struct LineError {
    pub line: usize,
    pub column: usize,
    pub what: String,
}

/// The unit of the timestamps in a batch (`precision=` on the write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Each timestamp's unit guessed from its size, as InfluxDB 3 does.
    Auto,
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    /// v1 only.
    Minutes,
    /// v1 only.
    Hours,
}

impl Precision {
    /// From `/api/v3/write_lp`'s parameter: InfluxDB 3's names, long and short.
    pub fn parse_v3(text: &str) -> Option<Self> {
        Some(match text {
            "auto" => Self::Auto,
            "ns" | "n" | "nanosecond" => Self::Nanoseconds,
            "us" | "u" | "microsecond" => Self::Microseconds,
            "ms" | "millisecond" => Self::Milliseconds,
            "s" | "second" => Self::Seconds,
            _ => return None,
        })
    }

    /// From the v1 `/write` parameter (InfluxDB 1's `n`, `u`/`µ`, `ms`, `s`, `m`, `h`).
    pub fn parse_v1(text: &str) -> Option<Self> {
        Some(match text {
            "n" | "ns" => Self::Nanoseconds,
            "u" | "µ" | "us" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            "m" => Self::Minutes,
            "h" => Self::Hours,
            _ => return None,
        })
    }

    /// From the v2 `/api/v2/write` parameter.
    pub fn parse_v2(text: &str) -> Option<Self> {
        Some(match text {
            "ns" => Self::Nanoseconds,
            "us" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            _ => return None,
        })
    }

    /// InfluxDB 3's guess: the value in whole "seconds if it were nanoseconds" is below
    /// 5 for seconds, 5,000 for milliseconds, 5,000,000 for microseconds (so it holds
    /// for times up to the year 2128).
    fn guess(value: i64) -> Self {
        match value.unsigned_abs() / 1_000_000_000 {
            0..5 => Self::Seconds,
            5..5_000 => Self::Milliseconds,
            5_000..5_000_000 => Self::Microseconds,
            _ => Self::Nanoseconds,
        }
    }

    fn to_ns(self, value: i64) -> Option<i64> {
        value.checked_mul(match self {
            Self::Auto => return Self::guess(value).to_ns(value),
            Self::Nanoseconds => 1,
            Self::Microseconds => 1_000,
            Self::Milliseconds => 1_000_000,
            Self::Seconds => 1_000_000_000,
            Self::Minutes => 60_000_000_000,
            Self::Hours => 3_600_000_000_000,
        })
    }
}

/// Now, in nanoseconds since the epoch: the time of a point that carries none, and of a
/// processing engine log line.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Parses a whole batch; the first bad line is the error.
pub fn parse(text: &str, precision: Precision) -> Result<Vec<Point>, LineError> {
    parse_each(text, precision).collect()
}

/// Parses each line on its own: a point, or why its line is wrong (comments and blank
/// lines give nothing).
pub fn parse_each(
    text: &str,
    precision: Precision,
) -> impl Iterator<Item = Result<Point, LineError>> + '_ {
    text.lines().enumerate().filter_map(move |(index, line)| {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        let mut cursor = Cursor {
            text: trimmed,
            pos: 0,
            line: index + 1,
            offset: line.len() - trimmed.len(),
        };
        Some(cursor.point(precision))
    })
}

/// Line `number` (1-based) of `text`, as `parse_each` counts them.
pub fn line_of(text: &str, number: usize) -> &str {
    text.lines().nth(number.saturating_sub(1)).unwrap_or("")
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    /// Bytes of indentation before `text` on its line.
    offset: usize,
}

impl Cursor<'_> {
    fn error(&self, what: impl Into<String>) -> LineError {
        self.error_at(self.pos, what)
    }

    fn error_at(&self, pos: usize, what: impl Into<String>) -> LineError {
        let before = &self.text[..pos.min(self.text.len())];
        LineError {
            line: self.line,
            column: self.offset + before.chars().count() + 1,
            what: what.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Text up to an unescaped `stops` character; a backslash escapes `escapable`.
    fn name(
        &mut self,
        stops: &[char],
        escapable: &[char],
        what: &str,
    ) -> Result<String, LineError> {
        let start = self.pos;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                break;
            }
            self.bump();
            if c == '\\'
                && let Some(next) = self.peek()
                && escapable.contains(&next)
            {
                self.bump();
                out.push(next);
                continue;
            }
            out.push(c);
        }
        if out.is_empty() {
            self.pos = start;
            return Err(self.error(format!("{what} is missing")));
        }
        Ok(out)
    }

    fn expect(&mut self, wanted: char, what: &str) -> Result<(), LineError> {
        match self.peek() {
            Some(c) if c == wanted => {
                self.bump();
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected {what}, found {c:?}"))),
            None => Err(self.error(format!("expected {what}, found the end of the line"))),
        }
    }

    fn point(&mut self, precision: Precision) -> Result<Point, LineError> {
        let measurement = self.name(&[',', ' '], &[',', ' ', '\\'], "the measurement")?;
        let mut tags = BTreeMap::new();
        while self.peek() == Some(',') {
            self.bump();
            let at = self.pos;
            let key = self.name(&['=', ',', ' '], &[',', '=', ' ', '\\'], "a tag key")?;
            self.expect('=', "'=' after the tag key")?;
            let value = self.name(&[',', ' '], &[',', '=', ' ', '\\'], "a tag value")?;
            if tags.insert(key.clone(), value).is_some() {
                self.pos = at;
                return Err(self.error(format!("tag {key:?} appears twice")));
            }
        }
        self.expect(' ', "a space before the fields")?;
        let mut fields = BTreeMap::new();
        loop {
            let at = self.pos;
            let key = self.name(&['=', ',', ' '], &[',', '=', ' ', '\\'], "a field key")?;
            self.expect('=', "'=' after the field key")?;
            let value = self.field_value()?;
            if tags.contains_key(&key) || fields.insert(key.clone(), value).is_some() {
                self.pos = at;
                return Err(self.error(format!("{key:?} is named twice in the point")));
            }
            if self.peek() != Some(',') {
                break;
            }
            self.bump();
        }
        let time_ns = match self.peek() {
            None => None,
            Some(' ') => {
                self.bump();
                let digits: String = self.text[self.pos..].trim_end().to_owned();
                let value: i64 = digits.parse().map_err(|_| {
                    self.error(format!("the timestamp {digits:?} is not an integer"))
                })?;
                Some(precision.to_ns(value).ok_or_else(|| {
                    self.error(format!(
                        "the timestamp {value} is out of range for its precision"
                    ))
                })?)
            }
            Some(c) => return Err(self.error(format!("unexpected {c:?} after the fields"))),
        };
        Ok(Point {
            measurement,
            tags,
            fields,
            time_ns,
            line: self.line,
        })
    }

    fn field_value(&mut self) -> Result<FieldValue, LineError> {
        if self.peek() == Some('"') {
            self.bump();
            let mut out = String::new();
            loop {
                match self.bump() {
                    Some('"') => return Ok(FieldValue::Text(out)),
                    Some('\\') if matches!(self.peek(), Some('"' | '\\')) => {
                        out.extend(self.bump());
                    }
                    Some(c) => out.push(c),
                    None => return Err(self.error("the string field value is not closed")),
                }
            }
        }
        let start = self.pos;
        let raw: String = self.text[self.pos..]
            .chars()
            .take_while(|c| !matches!(c, ',' | ' '))
            .collect();
        if raw.is_empty() {
            return Err(self.error("a field value is missing"));
        }
        let bad = |this: &Self| {
            this.error_at(
                start,
                format!("{raw:?} is not a field value (a number, 1i, 1u, true/false or \"text\")"),
            )
        };
        let value = match raw.as_str() {
            "t" | "T" | "true" | "True" | "TRUE" => FieldValue::Boolean(true),
            "f" | "F" | "false" | "False" | "FALSE" => FieldValue::Boolean(false),
            _ if raw.ends_with('i') => {
                FieldValue::Integer(raw[..raw.len() - 1].parse().map_err(|_| bad(self))?)
            }
            _ if raw.ends_with('u') => {
                FieldValue::Unsigned(raw[..raw.len() - 1].parse().map_err(|_| bad(self))?)
            }
            _ => match raw.parse::<f64>() {
                Ok(v) if v.is_finite() => FieldValue::Float(v),
                _ => return Err(bad(self)),
            },
        };
        self.pos += raw.len();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_with_escapes_types_and_timestamps() {
        let text = "# a comment\n\
                    cpu,host=a\\ b,region=eu usage=0.5,count=3i,up=t,name=\"x \\\"y\\\"\" 1700000000\n\
                    \n\
                    mem free=2u";
        let points = parse(text, Precision::Seconds).expect("valid");
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].measurement, "cpu");
        assert_eq!(points[0].tags["host"], "a b");
        assert_eq!(points[0].fields["usage"], FieldValue::Float(0.5));
        assert_eq!(points[0].fields["count"], FieldValue::Integer(3));
        assert_eq!(points[0].fields["up"], FieldValue::Boolean(true));
        assert_eq!(points[0].fields["name"], FieldValue::Text("x \"y\"".into()));
        assert_eq!(points[0].time_ns, Some(1_700_000_000_000_000_000));
        assert_eq!(points[1].fields["free"], FieldValue::Unsigned(2));
        assert_eq!(points[1].time_ns, None);
    }

    #[test]
    fn a_bad_line_is_named_with_its_column() {
        let err =
            parse("cpu v=1\ncpu,host=a v=oops 1", Precision::Nanoseconds).expect_err("invalid");
        assert_eq!((err.line, err.column), (2, 14), "{err}");
        assert!(err.what.contains("\"oops\" is not a field value"), "{err}");
        let err = parse("cpu", Precision::Nanoseconds).expect_err("no fields");
        assert_eq!((err.line, err.column), (1, 4), "{err}");
        let err = parse("cpu v=1 12x", Precision::Nanoseconds).expect_err("bad time");
        assert_eq!((err.line, err.column), (1, 9), "{err}");
        let err = parse("cpu v=\"open", Precision::Nanoseconds).expect_err("open string");
        assert!(err.what.contains("not closed"), "{err}");
    }
}
