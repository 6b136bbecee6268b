//! `baton ctl top`: a live table of the plugins, refreshed in place on a terminal
//! (ratatui; q, Esc or Ctrl-C quits), or printed one table per refresh when stdout is
//! not a terminal. Calls per second come from the difference between two `List`
//! answers' call counters; the p99 latency is the host's, over each plugin's recent calls.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use baton_proto::host::PluginStatus;
use baton_proto::host::supervisor_client::SupervisorClient;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line as TextLine;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::follow::connection_lost;
use super::{format, list, status_line};

type Client = SupervisorClient<Channel>;

const COLUMNS: [&str; 9] = [
    "PLUGIN",
    "STATE",
    "GEN",
    "CALLS/S",
    "ERRORS",
    "P99",
    "RSS",
    "CPU%",
    "LAST EVENT",
];
/// The plain table's column widths (the last column takes what it needs).
const WIDTHS: [usize; 8] = [16, 12, 4, 8, 7, 8, 8, 6];

/// The plugins as one `List` answered, and when.
struct Sample {
    at: Instant,
    plugins: Vec<PluginStatus>,
}

/// One plugin's line of the table, its cells as shown.
struct Line {
    state: i32,
    cells: [String; 9],
}

/// The table for `now`, with call rates measured since `before`.
fn lines(before: Option<&Sample>, now: &Sample) -> Vec<Line> {
    now.plugins
        .iter()
        .map(|p| {
            let rate = before.and_then(|b| {
                let earlier = b.plugins.iter().find(|q| q.name == p.name)?;
                let secs = now.at.duration_since(b.at).as_secs_f64();
                // A plugin removed and added again by a config reload counts from 0.
                let calls = p.calls.checked_sub(earlier.calls)?;
                (secs > 0.0).then(|| calls as f64 / secs)
            });
            Line {
                state: p.state,
                cells: [
                    p.name.clone(),
                    format::state_name(p.state).to_owned(),
                    p.generation.to_string(),
                    rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
                    p.errors.to_string(),
                    format::latency(p.p99_latency_us),
                    format::rss(p.rss_bytes),
                    if p.pid == 0 {
                        "-".to_owned()
                    } else {
                        format!("{:.1}", p.cpu_percent)
                    },
                    format::clip(&p.last_event, 200),
                ],
            }
        })
        .collect()
}

async fn sample(client: &mut Client) -> Result<Sample, tonic::Status> {
    let plugins = list(client).await?;
    Ok(Sample {
        at: Instant::now(),
        plugins,
    })
}

pub(crate) async fn run(
    client: &mut Client,
    socket: &Path,
    every: Duration,
    once: bool,
) -> Result<(), String> {
    let first = sample(client).await.map_err(|s| status_line(&s))?;
    if once || !std::io::stdout().is_terminal() {
        plain(client, first, every, once).await
    } else {
        live(client, socket, first, every).await
    }
}

/// What ended a refresh loop.
enum End {
    /// Asked to (q, a signal), or stdout went away.
    Quit,
    HostStopped,
}

/// A table per refresh, each with the rates over the interval before it.
async fn plain(
    client: &mut Client,
    mut before: Sample,
    every: Duration,
    once: bool,
) -> Result<(), String> {
    loop {
        tokio::time::sleep(every).await;
        let now = match sample(client).await {
            Ok(now) => now,
            Err(s) if connection_lost(&s) => {
                eprintln!("the host stopped ({})", s.message());
                return Ok(());
            }
            Err(s) => return Err(status_line(&s)),
        };
        let table = plain_table(&lines(Some(&before), &now));
        let mut out = std::io::stdout().lock();
        match out.write_all(table.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("cannot write to stdout: {e}")),
        }
        if once {
            return Ok(());
        }
        before = now;
    }
}

fn plain_table(lines: &[Line]) -> String {
    let row = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            match WIDTHS.get(i) {
                // Names and states to the left, figures to the right.
                Some(&w) if i < 2 => text.push_str(&format!("{cell:<w$} ")),
                Some(&w) => text.push_str(&format!("{cell:>w$} ")),
                None => text.push_str(&format!(" {}", format::clip(cell, 60))),
            }
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut table = format!(
        "{} {} plugin(s)\n",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
        lines.len()
    );
    table.push_str(&row(&COLUMNS));
    for line in lines {
        let cells: Vec<&str> = line.cells.iter().map(String::as_str).collect();
        table.push_str(&row(&cells));
    }
    table.push('\n');
    table
}

/// The terminal in full-screen mode while this lives; restored when dropped, on every
/// way out (ratatui's panic hook covers a panic).
struct Screen(ratatui::DefaultTerminal);

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = ratatui::try_restore();
    }
}

/// What the keyboard asks for.
enum Key {
    Quit,
    Redraw,
}

/// Reads the keyboard on a thread of its own (crossterm's reads block), until `keys`
/// is dropped or the terminal cannot be read.
fn read_keys(keys: mpsc::Sender<Key>) {
    while !keys.is_closed() {
        match event::poll(Duration::from_millis(200)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        let key = match event::read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                _ => continue,
            },
            Ok(Event::Resize(..)) => Key::Redraw,
            Ok(_) => continue,
            Err(_) => return,
        };
        if keys.blocking_send(key).is_err() {
            return;
        }
    }
}

async fn live(
    client: &mut Client,
    socket: &Path,
    first: Sample,
    every: Duration,
) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = |kind| signal(kind).map_err(|e| format!("cannot watch for signals: {e}"));
    let (mut interrupt, mut terminate) = (
        signals(SignalKind::interrupt())?,
        signals(SignalKind::terminate())?,
    );
    let terminal =
        ratatui::try_init().map_err(|e| format!("cannot take over the terminal: {e}"))?;
    let mut screen = Screen(terminal);
    let (keys_tx, mut keys) = mpsc::channel(8);
    std::thread::spawn(move || read_keys(keys_tx));
    let title = format!(
        " baton top · {} · every {:.1}s · q to quit ",
        socket.display(),
        every.as_secs_f64()
    );
    let mut shown = lines(None, &first);
    let mut before = first;
    let mut note = String::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let end = loop {
        draw(&mut screen, &title, &shown, &note)?;
        tokio::select! {
            _ = tick.tick() => match sample(client).await {
                Ok(now) => {
                    shown = lines(Some(&before), &now);
                    before = now;
                    note = format!("refreshed {}", chrono::Local::now().format("%H:%M:%S"));
                }
                Err(s) if connection_lost(&s) => break End::HostStopped,
                Err(s) => note = format!("the host did not answer: {}", status_line(&s)),
            },
            key = keys.recv() => match key {
                Some(Key::Quit) => break End::Quit,
                Some(Key::Redraw) => {}
                // No keyboard to read: q cannot quit, signals still do.
                None => keys = mpsc::channel(1).1,
            },
            _ = interrupt.recv() => break End::Quit,
            _ = terminate.recv() => break End::Quit,
        }
    };
    drop(screen);
    if let End::HostStopped = end {
        eprintln!("the host stopped");
    }
    Ok(())
}

fn draw(screen: &mut Screen, title: &str, shown: &[Line], note: &str) -> Result<(), String> {
    let widths = WIDTHS
        .iter()
        .map(|&w| Constraint::Length(w as u16))
        .chain([Constraint::Min(10)]);
    // As in the plain table: names and states to the left, figures to the right.
    let cells = |texts: Vec<String>| {
        texts.into_iter().enumerate().map(|(i, text)| {
            let text = TextLine::from(text);
            Cell::from(if (2..WIDTHS.len()).contains(&i) {
                text.right_aligned()
            } else {
                text
            })
        })
    };
    let header = Row::new(cells(COLUMNS.map(str::to_owned).to_vec()))
        .style(Style::new().add_modifier(Modifier::BOLD));
    screen
        .0
        .draw(|frame| {
            // The last column gets what the others leave (two borders, a space between
            // columns); its text is clipped to that, so a cut shows as one.
            let fixed: usize = WIDTHS.iter().sum::<usize>() + WIDTHS.len() + 2;
            let room = usize::from(frame.area().width)
                .saturating_sub(fixed)
                .max(10);
            let rows = shown.iter().map(|line| {
                let colour = match format::state_name(line.state) {
                    "serving" => Color::Green,
                    "crashed" | "failed" => Color::Red,
                    "stopped" | "stopping" => Color::DarkGray,
                    _ => Color::Yellow,
                };
                let mut texts = line.cells.to_vec();
                if let Some(last) = texts.last_mut() {
                    *last = format::clip(last, room);
                }
                Row::new(cells(texts)).style(Style::new().fg(colour))
            });
            let table = Table::new(rows, widths)
                .header(header)
                .block(Block::bordered().title(title.to_owned()));
            let [body, footer] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
            frame.render_widget(table, body);
            frame.render_widget(Paragraph::new(note.to_owned()), footer);
        })
        .map(drop)
        .map_err(|e| format!("cannot draw on the terminal: {e}"))
}
