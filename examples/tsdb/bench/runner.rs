//! The runner's figures (`--only runner`, issue 29): InfluxDB 3 plugins run out of
//! process on `python -m influxdb3_runner`, against the floor of an engine that builds
//! `table_batches` in its own Python process.
//!
//! One tsdb, its plugin directory holding `bench/plugins/bench_sink.py`, five triggers
//! on it: `drain` (its first call waits on a gate file, so every batch is queued before
//! the rest are delivered back to back), `flow` (written to as fast as tsdb takes
//! writes), `paced` and `paced_sync` (a paced writer; `run_async` true and false) and
//! `bench` (a request trigger: the figures, and the floor and decode timed in Python).
//! The encode is timed here, with tsdb's own functions.

use std::io::BufReader;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use tsdb::api::WriteBatch;
use tsdb::line_protocol::{self, Precision};
use tsdb::table_batches::{Batch, RowsForm, shared};

use super::{Db, connect, launch, request, trigger_when};

/// Rows per write of the throughput runs.
const BATCH: usize = 1_000;
/// Rows per write of the paced runs.
const PACED_ROWS: usize = 10;
/// The paced writer's interval: 100 writes a second.
const PACE: Duration = Duration::from_millis(10);
/// How long any one wait on tsdb may take before the run fails, naming what it waited for.
const WAIT: Duration = Duration::from_secs(120);

struct Sizes {
    /// Writes of `BATCH` rows for `flow`.
    batches: usize,
    /// Writes of `BATCH` rows for `drain`: more, since it is delivered in a few calls of
    /// `JOINED_ROWS` (well under the trigger's queue of 1024).
    drained: usize,
    /// Writes of the paced writer, per trigger.
    paced: usize,
    /// Rounds of the encode timing, and the repeats of each Python timing.
    repeats: usize,
}

/// The section: skipped, saying why, where the repository has no Python venv.
pub fn run(quick: bool) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        println!(
            "\nrunner: skipped, {} is missing (plugin-sdk/python/setup-python.sh makes it)",
            python.display()
        );
        return Ok(());
    }
    let sizes = if quick {
        Sizes {
            batches: 10,
            drained: 10,
            paced: 20,
            repeats: 10,
        }
    } else {
        Sizes {
            batches: 200,
            drained: 1000,
            paced: 500,
            repeats: 200,
        }
    };
    let runner = root.join("examples/tsdb/influxdb3_runner");
    let generated = Command::new(&python)
        .arg(runner.join("generate.py"))
        .status()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !generated.success() {
        return Err(format!("{}/generate.py failed", runner.display()));
    }
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("no directory for this binary")?
        .to_owned();
    let db = launch(
        &bin,
        "",
        &format!(
            "plugin_dir = \"plugins\"\npython = {:?}\npython_path = [{:?}]\n",
            python.display().to_string(),
            runner.display().to_string()
        ),
    )?;
    let plugins = db.dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
    std::fs::copy(
        root.join("examples/tsdb/bench/plugins/bench_sink.py"),
        plugins.join("bench_sink.py"),
    )
    .map_err(|e| format!("copy the bench's plugin: {e}"))?;
    measure(&db, &sizes)
}

fn measure(db: &Db, sizes: &Sizes) -> Result<(), String> {
    let mut conn = connect(db.addr)?;
    let gate = db.dir.path().join("gate");
    let rows = (sizes.batches * BATCH).to_string();
    let drained_rows = (sizes.drained * BATCH).to_string();
    let paced_rows = (sizes.paced * PACED_ROWS).to_string();
    let gate_text = gate.display().to_string();
    let triggers = [
        ("bench", "request:bench", vec![], true),
        (
            "drain",
            "table:drain",
            vec![
                ("run", "drain"),
                ("expect", &*drained_rows),
                ("gate", &*gate_text),
            ],
            true,
        ),
        (
            "flow",
            "table:flow",
            vec![("run", "flow"), ("expect", &*rows)],
            true,
        ),
        (
            "paced",
            "table:paced",
            vec![("run", "paced"), ("expect", &*paced_rows), ("latency", "1")],
            true,
        ),
        (
            "paced_sync",
            "table:paced_sync",
            vec![
                ("run", "paced_sync"),
                ("expect", &*paced_rows),
                ("latency", "1"),
            ],
            false,
        ),
    ];
    for (name, spec, args, run_async) in &triggers {
        create(&mut conn, name, spec, args, *run_async)?;
    }
    for (name, ..) in &triggers {
        let status = trigger_when(&mut conn, name, WAIT, |t| t["plugin_state"] == "serving")?;
        if status["plugin_state"] != "serving" {
            return Err(format!("trigger {name} does not serve: {status}"));
        }
    }

    let mut n = 0;
    // Drain: every batch queued behind the gated first call, then delivered.
    let started = Instant::now();
    write_batches(&mut conn, "drain", sizes.drained, &mut n)?;
    let ingest = (sizes.drained * BATCH) as f64 / started.elapsed().as_secs_f64();
    std::fs::write(&gate, "").map_err(|e| e.to_string())?;
    let drain = figures(&mut conn, "drain", sizes.drained)?;
    // Flow: from the first write to the plugin's end of its last call.
    let first = wall_ns();
    write_batches(&mut conn, "flow", sizes.batches, &mut n)?;
    let flow = figures(&mut conn, "flow", sizes.batches)?;
    let mut round_trips = Vec::new();
    write_paced(&mut conn, "paced", sizes.paced, &mut Vec::new())?;
    let paced = figures(&mut conn, "paced", sizes.paced)?;
    write_paced(&mut conn, "paced_sync", sizes.paced, &mut round_trips)?;
    let paced_sync = figures(&mut conn, "paced_sync", sizes.paced)?;

    // The form the runner was sent the rows in, once it had said what it reads.
    let said = drain["last_message"].as_str().unwrap_or_default();
    let form = if said.contains("(pickle)") {
        RowsForm::Pickle
    } else if said.contains("(JSON)") {
        RowsForm::Json
    } else {
        RowsForm::Messages
    };
    let encode = encode_costs(sizes.repeats, form)?;
    let (status, answer) = request(
        &mut conn,
        "POST",
        &format!("/api/v3/engine/bench?do=costs&repeat={}", sizes.repeats),
        &encode.batch,
    )?;
    if status != 200 {
        return Err(format!("do=costs: {status} {answer}"));
    }
    let python: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("do=costs: {e}: {answer}"))?;

    let int = |v: &serde_json::Value, key: &str| v[key].as_i64().unwrap_or(0);
    let float = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let flow_rate = int(&flow, "rows") as f64 / ((int(&flow, "last_end_ns") - first) as f64 / 1e9);
    let drained = int(&drain, "rows") - int(&drain, "gate_rows");
    let drain_ns = (int(&drain, "last_end_ns") - int(&drain, "gate_end_ns")) as f64;
    let drain_rate = drained as f64 / (drain_ns / 1e9);
    let per_row = 1e9 / drain_rate;
    let floor_ns = float(&python, "floor_ns_per_row");
    let floor_rate = 1e9 / floor_ns;
    let fresh_ns = float(&python, "fresh_floor_ns_per_row");
    let fresh_rate = 1e9 / fresh_ns;
    let form = match form {
        RowsForm::Pickle => "pickle",
        RowsForm::Json => "json",
        RowsForm::Messages => "messages",
    };
    let decode = float(&python, &format!("{form}_decode_ns_per_row"));
    let own = int(&drain, "own_ns") as f64 / int(&drain, "rows") as f64;
    let encoded = encode.steps.iter().map(|(_, ns)| ns).sum::<f64>();
    // The first three steps run as a write is taken (the pickle on a thread of its own),
    // before the gate opens: only the rows' form and prost are on the path of the
    // batches delivered back to back.
    let sending = encode.steps.iter().skip(3).map(|(_, ns)| ns).sum::<f64>();
    let target = |ratio: f64| {
        if ratio >= 0.5 { "met" } else { "not met" }
    };

    println!();
    println!(
        "| runner: rows into an InfluxDB 3 plugin's process_writes (Python {}, protobuf {}) | value | floor | ratio |",
        python["python"].as_str().unwrap_or("?"),
        python["protobuf"].as_str().unwrap_or("?")
    );
    println!("|---|---:|---:|---:|");
    // Against both floors (see `bench_sink.py`): the values shared, and made fresh.
    let against = |rate: f64| {
        format!(
            "{:.2}× shared, {:.2}× fresh (target ≥ 0.5×: {}, {})",
            rate / floor_rate,
            rate / fresh_rate,
            target(rate / floor_rate),
            target(rate / fresh_rate)
        )
    };
    println!(
        "| end to end, run_async: first write → the plugin has counted every row ({} writes × {BATCH} rows, 2 tags, 3 fields) | {flow_rate:.0} rows/s | {floor_rate:.0} / {fresh_rate:.0} rows/s | {} |",
        sizes.batches,
        against(flow_rate)
    );
    let gate_note = if drain["gate_opened"] == true {
        ""
    } else {
        " (the gate timed out: not every batch was queued first)"
    };
    println!(
        "| delivery alone: the {} batches queued, then delivered back to back in {} calls{gate_note} | {drain_rate:.0} rows/s | {floor_rate:.0} / {fresh_rate:.0} rows/s | {} |",
        sizes.drained - 1,
        int(&drain, "batches") - 1,
        against(drain_rate)
    );
    println!("| tsdb's ingest of those writes, the plugin held | {ingest:.0} rows/s | | |");
    println!(
        "| the floor, shared: the same dicts built in the plugin's process from the same value objects, dict displays / dict(zip()) | {floor_ns:.0} / {:.0} ns/row | | |",
        float(&python, "generic_ns_per_row")
    );
    println!(
        "| the floor, fresh: the same, each value made anew from columns of machine values and UTF-8 (as an in-process engine converts its columns) | {fresh_ns:.0} ns/row | | |"
    );
    println!("| per row, delivered back to back | {per_row:.0} ns | | |");
    let parts: Vec<String> = encode
        .steps
        .iter()
        .map(|(what, ns)| format!("{what} {ns:.0}"))
        .collect();
    println!(
        "| encode, in tsdb ({}; the first three as the write is taken) | {encoded:.0} ns | | |",
        parts.join(", ")
    );
    println!(
        "| · of which on the delivery's path: the rows' form and prost | {sending:.0} ns | | |"
    );
    let rows_of = int(&python, "rows").max(1);
    for (key, how) in [
        (
            "pickle",
            "the rows as a pickle, the runner's data-only Unpickler",
        ),
        ("json", "the rows as JSON, json.loads"),
        ("messages", "the rows as messages, table_batches"),
    ] {
        if python[format!("{key}_decode_ns_per_row")].is_null() {
            continue;
        }
        println!(
            "| {} decode into dicts, in the runner: {how} (of which ParseFromString {:.0} ns; {} B/row){} | {:.0} ns | | |",
            if key == form { "·" } else { "(not sent)" },
            float(&python, &format!("{key}_parse_ns_per_row")),
            int(&python, &format!("{key}_bytes")) / rows_of,
            if key == form { "" } else { ", for comparison" },
            float(&python, &format!("{key}_decode_ns_per_row")),
        );
    }
    println!("| · the plugin's own loop and bookkeeping | {own:.0} ns | | |");
    println!(
        "| · transport and dispatch: the rest | {:.0} ns | | |",
        per_row - sending - decode - own
    );
    let (p50, p99) = percentiles(&latencies(&paced));
    println!(
        "| write sent → process_writes entered, paced {} writes/s × {PACED_ROWS} rows, run_async true, p50 / p99 | {p50:.2} / {p99:.2} ms | | |",
        1_000 / PACE.as_millis()
    );
    let (p50, p99) = percentiles(&latencies(&paced_sync));
    let (r50, r99) = percentiles(&round_trips);
    println!(
        "| the same, run_async false (the write answered after the call); the write's round trip | {p50:.2} / {p99:.2} ms; {r50:.2} / {r99:.2} ms | | |"
    );
    Ok(())
}

/// Makes trigger `name` in database `bench` on the bench's plugin.
fn create(
    conn: &mut BufReader<TcpStream>,
    name: &str,
    spec: &str,
    args: &[(&str, &str)],
    run_async: bool,
) -> Result<(), String> {
    let args: serde_json::Map<String, serde_json::Value> = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    let body = serde_json::json!({
        "db": "bench",
        "plugin_filename": "bench_sink.py",
        "trigger_name": name,
        "trigger_specification": spec,
        "trigger_arguments": args,
        "trigger_settings": { "run_async": run_async, "error_behavior": "Log" },
        "disabled": false,
    });
    let (status, answer) = request(
        conn,
        "POST",
        "/api/v3/configure/processing_engine_trigger",
        body.to_string(),
    )?;
    if status != 200 {
        return Err(format!("trigger {name} was refused ({status}): {answer}"));
    }
    Ok(())
}

/// `rows` rows of `table` from row `first` on: 2 tags, a float, an integer and a
/// string field, and row `n` at `time(n)`.
fn lines(table: &str, first: usize, rows: usize, time: impl Fn(usize) -> i64) -> String {
    let mut body = String::with_capacity(rows * 96);
    for n in first..first + rows {
        body.push_str(&format!(
            "{table},host=h{},region=r{} usage={},count={n}i,status=\"{}\" {}\n",
            n % 16,
            n % 4,
            (n % 1000) as f64 / 8.0,
            if n % 3 == 0 { "high" } else { "ok" },
            time(n)
        ));
    }
    body
}

fn write(conn: &mut BufReader<TcpStream>, table: &str, body: &str) -> Result<(), String> {
    let (status, answer) = request(conn, "POST", "/api/v3/write_lp?db=bench", body)?;
    if status != 204 {
        return Err(format!(
            "a write to {table} was refused ({status}): {answer}"
        ));
    }
    Ok(())
}

fn write_batches(
    conn: &mut BufReader<TcpStream>,
    table: &str,
    batches: usize,
    n: &mut usize,
) -> Result<(), String> {
    let base = wall_ns();
    for _ in 0..batches {
        let body = lines(table, *n, BATCH, |n| base + n as i64);
        *n += BATCH;
        write(conn, table, &body)?;
    }
    Ok(())
}

/// `writes` writes at `PACE`, each row's time the wall clock when it was sent; the
/// round trip of each, into `round_trips` (ms).
fn write_paced(
    conn: &mut BufReader<TcpStream>,
    table: &str,
    writes: usize,
    round_trips: &mut Vec<f64>,
) -> Result<(), String> {
    let started = Instant::now();
    for k in 0..writes {
        let slot = started + PACE * k as u32;
        if let Some(wait) = slot.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        let at = wall_ns();
        // Distinct times, so that no row of the write replaces another.
        let body = lines(table, 0, PACED_ROWS, |n| at + n as i64);
        write(conn, table, &body)?;
        round_trips.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Run `run`'s figures, from the request trigger, once its trigger has answered
/// `batches` calls: an error unless every row came, each batch once and without error.
fn figures(
    conn: &mut BufReader<TcpStream>,
    run: &str,
    batches: usize,
) -> Result<serde_json::Value, String> {
    let status = trigger_when(conn, run, WAIT, |t| {
        t["batches"].as_u64().unwrap_or(0) >= batches as u64
            || t["errors"].as_u64() > Some(0)
            || t["dropped"].as_u64() > Some(0)
    })?;
    if status["batches"].as_u64() != Some(batches as u64) || status["errors"] != 0 {
        return Err(format!(
            "trigger {run} answered {} of {batches} batches: {status}",
            status["batches"]
        ));
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, answer) = request(
            conn,
            "GET",
            &format!("/api/v3/engine/bench?do=figures&run={run}"),
            "",
        )?;
        if code != 200 {
            return Err(format!("do=figures&run={run}: {code} {answer}"));
        }
        let figures: serde_json::Value =
            serde_json::from_str(&answer).map_err(|e| format!("{e}: {answer}"))?;
        if figures["ready"] == true {
            let mut figures = figures;
            figures["last_message"] = status["last_message"].clone();
            let expected = match run {
                "paced" | "paced_sync" => batches * PACED_ROWS,
                _ => batches * BATCH,
            };
            if figures["rows"].as_u64() != Some(expected as u64) {
                return Err(format!("run {run}: {expected} rows written, {figures}"));
            }
            return Ok(figures);
        }
        if Instant::now() > deadline {
            return Err(format!("run {run}: no figures after {WAIT:?}: {status}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What tsdb's side of a delivery costs.
struct Encode {
    /// ns per row of each step by which tsdb turns the points of a write into a
    /// trigger's `WriteBatch` on the wire (median of the rounds).
    steps: Vec<(&'static str, f64)>,
    /// One such batch, encoded, its rows in every form (messages, JSON, pickle).
    batch: Vec<u8>,
}

/// Times the encode over `rounds` batches of `BATCH` rows, the rows in `form` (as
/// delivered to a process that reads them so).
fn encode_costs(rounds: usize, form: RowsForm) -> Result<Encode, String> {
    let base = wall_ns();
    let text = lines("flow", 0, BATCH, |n| base + n as i64);
    let points = line_protocol::parse(&text, Precision::Nanoseconds).map_err(|e| e.to_string())?;
    let mut samples = [const { Vec::new() }; 5];
    let mut kept = None;
    for _ in 0..rounds.max(1) {
        let points = points.clone();
        let t0 = Instant::now();
        let tables = tsdb::host_api::by_table(points);
        let t1 = Instant::now();
        // As the engine's `written` builds each trigger's batch from the write's tables.
        let batch = Batch::new(
            WriteBatch {
                trigger: "flow".into(),
                args: [("run", "flow"), ("expect", "0")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                database: "bench".into(),
                sequence: 1,
                ..WriteBatch::default()
            },
            shared(tables),
        );
        let t2 = Instant::now();
        // A process reading pickles has its writes pickled ahead, on a thread of its
        // own, as they are taken.
        if form == RowsForm::Pickle {
            for table in &batch.tables {
                table.pickle();
            }
        }
        let t3 = Instant::now();
        // The delivery sends the rows in the form the process reads (the batch it
        // keeps, to send again after a crash, shares them).
        let sent = batch.sent_as(form);
        let t4 = Instant::now();
        let encoded = sent.encode_to_vec();
        let t5 = Instant::now();
        for (samples, (from, to)) in
            samples
                .iter_mut()
                .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)])
        {
            samples.push((to - from).as_nanos() as f64 / BATCH as f64);
        }
        std::hint::black_box(encoded);
        kept = Some(batch);
    }
    let wire = match form {
        RowsForm::Pickle => "the pickles joined",
        RowsForm::Json => "to JSON",
        RowsForm::Messages => "the messages cloned",
    };
    let names = [
        "by_table",
        "the batch built",
        "pickled ahead",
        wire,
        "prost",
    ];
    let steps = names
        .into_iter()
        .zip(samples.iter_mut())
        .map(|(name, s)| {
            s.sort_by(f64::total_cmp);
            (name, s[s.len() / 2])
        })
        .collect();
    let kept = kept.ok_or("no round")?;
    let mut every = kept.sent_as(RowsForm::Messages);
    every.table_batches_json = kept.sent_as(RowsForm::Json).table_batches_json;
    every.table_batches_pickle = kept.sent_as(RowsForm::Pickle).table_batches_pickle;
    Ok(Encode {
        steps,
        batch: every.encode_to_vec(),
    })
}

fn latencies(figures: &serde_json::Value) -> Vec<f64> {
    figures["latencies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_f64())
                .map(|ns| ns / 1e6)
                .collect()
        })
        .unwrap_or_default()
}

/// p50 and p99 of `samples`; NaN for none.
fn percentiles(samples: &[f64]) -> (f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: usize| {
        sorted
            .get((sorted.len() * q / 100).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(50), at(99))
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(0))
}
