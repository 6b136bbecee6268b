//! A write batch's rows as InfluxDB 3's `table_batches` in Python's pickle format
//! (protocol 4, data only: lists, dicts, `str`, `int`, `float`, `bool`, `None`), for a
//! runner that said it reads them so (`WriteBatch.table_batches_pickle`). `pickle.loads`
//! builds the dicts in C and makes each repeated key and short string once (the memo),
//! where `json.loads` makes every one anew: 0.3 against 1.0–1.6 µs a row of 2 tags and
//! 3 fields. Nothing here names a class or a callable, and the runner's reader refuses
//! any that would come (`find_class`).
//!
//! A table's rows of one write are pickled on their own (`rows`), as a self-contained
//! piece that `list` puts into the rows of its table: a write's table is pickled once for
//! every trigger it fires, and a call carrying several writes joins their pieces.

use std::collections::HashMap;

use crate::api::Point;
use crate::api::value::Kind;

// The opcodes used, as Python's `pickletools` names them.
const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const EMPTY_LIST: u8 = b']';
const APPENDS: u8 = b'e';
const EMPTY_DICT: u8 = b'}';
const SETITEMS: u8 = b'u';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const BINUNICODE8: u8 = 0x8d;
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const BININT: u8 = b'J';
const LONG1: u8 = 0x8a;
const BINFLOAT: u8 = b'G';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const NONE: u8 = b'N';

/// Strings up to this long are made once per table and fetched from the memo after:
/// keys, tag values and short text repeat from row to row; a long text rarely does.
const MEMO_MAX_LEN: usize = 64;

/// The rows `[{tags…, fields…, "time": ns}]` of `points` as a piece for `list`: the
/// items to append to a table's list of rows. A field named like a tag, or `time`,
/// comes after it, so that the dict keeps the last of a repeated key as the messages'
/// reader does.
pub fn rows(points: &[Point]) -> Vec<u8> {
    let mut out = Pickle {
        out: Vec::with_capacity(2 + points.len() * 64),
        memo: HashMap::default(),
    };
    out.op(MARK);
    for point in points {
        out.op(EMPTY_DICT);
        out.op(MARK);
        for (key, value) in &point.tags {
            out.string(key);
            out.string(value);
        }
        for (key, value) in &point.fields {
            out.string(key);
            match &value.kind {
                Some(Kind::Float(f)) => {
                    out.op(BINFLOAT);
                    out.out.extend_from_slice(&f.to_be_bytes());
                }
                Some(Kind::Integer(n)) => out.int(*n),
                Some(Kind::Unsigned(n)) => match i64::try_from(*n) {
                    Ok(n) => out.int(n),
                    Err(_) => {
                        // Nine bytes: a positive two's complement needs the sign byte.
                        out.op(LONG1);
                        out.out.push(9);
                        out.out.extend_from_slice(&n.to_le_bytes());
                        out.out.push(0);
                    }
                },
                Some(Kind::Text(t)) => out.string(t),
                Some(Kind::Boolean(b)) => out.op(if *b { NEWTRUE } else { NEWFALSE }),
                None => out.op(NONE),
            }
        }
        out.string("time");
        out.int(point.time_ns);
        out.op(SETITEMS);
    }
    out.op(APPENDS);
    out.out
}

/// The whole pickle: the list of `tables`, each `{"table_name": name, "rows": [...]}`
/// with the rows of its pieces from `rows`, in order. Each piece numbers its memo from
/// 0 and fetches only what it put, so one piece's entries replacing another's change
/// nothing (the names around them are not memoized). All of it is one frame: an
/// `Unpickler` reading from a file (the runner's, for its `find_class`) then takes it in
/// one read, where unframed it calls the file's `read` for every opcode (3x slower in
/// all).
pub fn list<'a, P>(tables: impl IntoIterator<Item = (&'a str, P)>) -> Vec<u8>
where
    P: IntoIterator<Item = &'a [u8]>,
{
    let mut body = vec![EMPTY_LIST, MARK];
    for (name, pieces) in tables {
        body.extend_from_slice(&[EMPTY_DICT, MARK]);
        put_text(&mut body, "table_name");
        put_text(&mut body, name);
        put_text(&mut body, "rows");
        body.push(EMPTY_LIST);
        for piece in pieces {
            body.extend_from_slice(piece);
        }
        body.push(SETITEMS);
    }
    body.extend_from_slice(&[APPENDS, STOP]);
    let mut out = Vec::with_capacity(11 + body.len());
    out.extend_from_slice(&[PROTO, 4, FRAME]);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// `text` as a `str`, not memoized.
fn put_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if let Ok(len) = u8::try_from(bytes.len()) {
        out.extend_from_slice(&[SHORT_BINUNICODE, len]);
    } else if let Ok(len) = u32::try_from(bytes.len()) {
        out.push(BINUNICODE);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        out.push(BINUNICODE8);
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

struct Pickle<'a> {
    out: Vec<u8>,
    memo: HashMap<&'a str, u32, foldhash::fast::RandomState>,
}

impl<'a> Pickle<'a> {
    fn op(&mut self, op: u8) {
        self.out.push(op);
    }

    fn string(&mut self, text: &'a str) {
        if text.len() > MEMO_MAX_LEN {
            self.text(text);
            return;
        }
        if let Some(&at) = self.memo.get(text) {
            match u8::try_from(at) {
                Ok(at) => self.out.extend_from_slice(&[BINGET, at]),
                Err(_) => {
                    self.op(LONG_BINGET);
                    self.out.extend_from_slice(&at.to_le_bytes());
                }
            }
            return;
        }
        self.text(text);
        let at = self.memo.len() as u32;
        match u8::try_from(at) {
            Ok(at) => self.out.extend_from_slice(&[BINPUT, at]),
            Err(_) => {
                self.op(LONG_BINPUT);
                self.out.extend_from_slice(&at.to_le_bytes());
            }
        }
        self.memo.insert(text, at);
    }

    fn text(&mut self, text: &str) {
        put_text(&mut self.out, text);
    }

    fn int(&mut self, n: i64) {
        if let Ok(n) = u8::try_from(n) {
            self.out.extend_from_slice(&[BININT1, n]);
        } else if let Ok(n) = u16::try_from(n) {
            self.op(BININT2);
            self.out.extend_from_slice(&n.to_le_bytes());
        } else if let Ok(n) = i32::try_from(n) {
            self.op(BININT);
            self.out.extend_from_slice(&n.to_le_bytes());
        } else {
            self.op(LONG1);
            self.out.push(8);
            self.out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use super::*;
    use crate::api::Value;

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    /// The repository's venv, else the machine's `python3`: the reader needs only the
    /// standard library.
    fn python() -> PathBuf {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    }

    /// Runs `check` (Python, `got` bound to what the runner's reader made of `pickle`)
    /// and fails with what it printed unless it exits 0.
    fn python_reads(pickle: &[u8], check: &str) {
        let rows_py =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("influxdb3_runner/influxdb3_runner/rows.py");
        let script = format!(
            "import importlib.util, math, sys\n\
             spec = importlib.util.spec_from_file_location('rows', {rows_py:?})\n\
             rows = importlib.util.module_from_spec(spec)\n\
             spec.loader.exec_module(rows)\n\
             got = rows.loads(sys.stdin.buffer.read())\n\
             {check}\n"
        );
        let mut child = Command::new(python())
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        child
            .stdin
            .take()
            .expect("a stdin")
            .write_all(pickle)
            .expect("python reads the pickle");
        let out = child.wait_with_output().expect("python ends");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_runners_reader_makes_the_same_dicts_of_the_same_types() {
        let fields = [
            ("whole", Kind::Float(2.0)),
            ("neg_zero", Kind::Float(-0.0)),
            ("tiny", Kind::Float(1e-300)),
            ("nan", Kind::Float(f64::NAN)),
            ("inf", Kind::Float(f64::INFINITY)),
            ("ninf", Kind::Float(f64::NEG_INFINITY)),
            ("zero", Kind::Integer(0)),
            ("byte", Kind::Integer(255)),
            ("two_bytes", Kind::Integer(256)),
            ("u16", Kind::Integer(65_535)),
            ("over_u16", Kind::Integer(65_536)),
            ("minus", Kind::Integer(-1)),
            ("i32_min", Kind::Integer(i32::MIN.into())),
            ("i32_max", Kind::Integer(i32::MAX.into())),
            ("over_i32", Kind::Integer(i64::from(i32::MAX) + 1)),
            ("under_i32", Kind::Integer(i64::from(i32::MIN) - 1)),
            ("i64_min", Kind::Integer(i64::MIN)),
            ("i64_max", Kind::Integer(i64::MAX)),
            ("u_small", Kind::Unsigned(7)),
            ("u_over_i64", Kind::Unsigned(1 << 63)),
            ("u64_max", Kind::Unsigned(u64::MAX)),
            ("s", Kind::Text("ok\t\"q\"\\ \u{0} é 漢 🦀".into())),
            ("long", Kind::Text("x".repeat(300))),
            ("empty", Kind::Text(String::new())),
            ("yes", Kind::Boolean(true)),
            ("no", Kind::Boolean(false)),
        ];
        let mut point = Point {
            tags: [("host".into(), "a \"b\"\\c\n\u{1}é".into())].into(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_owned(), value(v)))
                .collect(),
            time_ns: -5,
        };
        point.fields.insert("unset".into(), Value { kind: None });
        let cpu = rows(&[point.clone(), point]);
        let empty = rows(&[]);
        let pickle = list([("cpu", [&cpu[..]]), ("empty", [&empty[..]])]);
        python_reads(
            &pickle,
            r#"row = {"host": 'a "b"\\c\n\x01é', "whole": 2.0, "neg_zero": -0.0, "tiny": 1e-300,
       "nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "zero": 0,
       "byte": 255, "two_bytes": 256, "u16": 65535, "over_u16": 65536, "minus": -1,
       "i32_min": -2**31, "i32_max": 2**31 - 1, "over_i32": 2**31, "under_i32": -2**31 - 1,
       "i64_min": -2**63, "i64_max": 2**63 - 1, "u_small": 7, "u_over_i64": 2**63,
       "u64_max": 2**64 - 1, "s": 'ok\t"q"\\ \x00 é 漢 🦀', "long": "x" * 300, "empty": "",
       "yes": True, "no": False, "unset": None, "time": -5}
want = [{"table_name": "cpu", "rows": [row, dict(row)]}, {"table_name": "empty", "rows": []}]
def shape(batches):
    return [(t["table_name"], [sorted((k, type(v).__name__, repr(v)) for k, v in r.items()) for r in t["rows"]]) for t in batches]
assert shape(got) == shape(want), (shape(got), shape(want))
assert math.copysign(1, got[0]["rows"][0]["neg_zero"]) == -1
"#,
        );
    }

    #[test]
    fn a_field_named_like_a_tag_or_time_comes_after_it() {
        let point = Point {
            tags: [("k".into(), "tag".into())].into(),
            fields: [
                ("k".into(), value(Kind::Integer(1))),
                ("time".into(), value(Kind::Integer(2))),
            ]
            .into(),
            time_ns: 3,
        };
        let pickle = list([("t", [&rows(&[point])[..]])]);
        python_reads(
            &pickle,
            r#"assert got == [{"table_name": "t", "rows": [{"k": 1, "time": 3}]}], got"#,
        );
    }

    #[test]
    fn past_256_strings_the_memo_takes_four_byte_indices_and_pieces_keep_their_own() {
        // 300 hosts, each twice: the second of each is fetched from the memo.
        let points: Vec<Point> = (0..600)
            .map(|n| Point {
                tags: [("host".into(), format!("h{}", n % 300))].into(),
                time_ns: n,
                ..Point::default()
            })
            .collect();
        let first = rows(&points);
        assert!(first.contains(&LONG_BINGET) && first.contains(&LONG_BINPUT));
        // The second piece's memo numbers from 0 again over other strings.
        let second = rows(&[Point {
            tags: [("zone".into(), "z".into())].into(),
            ..Point::default()
        }]);
        let pickle = list([
            ("a", vec![&first[..]]),
            ("b", vec![&second[..]]),
            ("a", vec![&first[..]]),
        ]);
        python_reads(
            &pickle,
            r#"rows = [{"host": f"h{n % 300}", "time": n} for n in range(600)]
assert got == [{"table_name": "a", "rows": rows}, {"table_name": "b", "rows": [{"zone": "z", "time": 0}]}, {"table_name": "a", "rows": rows}]
assert got[0]["rows"][0]["host"] is got[0]["rows"][300]["host"]"#,
        );
    }

    #[test]
    fn a_tables_pieces_of_several_writes_make_one_list_of_rows() {
        // Each piece's memo numbers from 0: the second's "zone" replaces the first's
        // "host" at index 0, and the third fetches its own again.
        let hosts: Vec<Point> = (0..3)
            .map(|n| Point {
                tags: [("host".into(), "h".into())].into(),
                time_ns: n,
                ..Point::default()
            })
            .collect();
        let first = rows(&hosts);
        let second = rows(&[Point {
            tags: [("zone".into(), "z".into())].into(),
            time_ns: 9,
            ..Point::default()
        }]);
        let empty = rows(&[]);
        let pickle = list([("cpu", vec![&first[..], &empty[..], &second[..], &first[..]])]);
        python_reads(
            &pickle,
            r#"hosts = [{"host": "h", "time": n} for n in range(3)]
assert got == [{"table_name": "cpu", "rows": hosts + [{"zone": "z", "time": 9}] + hosts}], got"#,
        );
    }

    #[test]
    fn no_tables_is_an_empty_list() {
        python_reads(
            &list(std::iter::empty::<(&str, Vec<&[u8]>)>()),
            "assert got == [], got",
        );
    }

    #[test]
    fn one_frame_holds_everything_after_its_header() {
        let piece = rows(&[Point::default()]);
        let pickle = list([("t", [&piece[..]]), ("t", [&piece[..]])]);
        assert_eq!(pickle[..3], [PROTO, 4, FRAME]);
        let framed = u64::from_le_bytes(pickle[3..11].try_into().expect("8 bytes"));
        assert_eq!(framed as usize, pickle.len() - 11);
        assert_eq!(pickle.last(), Some(&STOP));
    }
}
