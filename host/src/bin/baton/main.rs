//! The `baton` command: `baton run` is the daemon (`run.rs`), `baton ctl` talks to a
//! running one (`ctl.rs`), `baton check` tests a plugin against the contract,
//! `baton validate` checks a config (`validate.rs`).

mod call;
mod ctl;
mod lifecycle_cmd;
mod run;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::ctl::Ctl;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Run gRPC plugins as supervised child processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the host with the plugins of a config file, until SIGINT or SIGTERM.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "baton.toml")]
        config: PathBuf,
        /// Only check the config, as `baton validate` does, and exit.
        #[arg(long)]
        check: bool,
    },
    /// Check a config file as `baton run` would before starting anything, and exit: 0
    /// with a one-line summary, or 64 with every mistake in it, each on its line.
    Validate {
        /// The config file.
        #[arg(default_value = "baton.toml")]
        config: PathBuf,
    },
    /// Check that a plugin keeps the baton contract: launch it as a host would and
    /// report each check on a line, with the reason when it fails. Exit code 1 when
    /// anything fails.
    Check {
        /// A call to make before the snapshot check, to give the plugin some state;
        /// METHOD=PAYLOAD, or METHOD alone for an empty payload; repeatable.
        #[arg(long = "call", value_name = "METHOD[=PAYLOAD]")]
        calls: Vec<String>,
        /// How long start-up and each call may take.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// How long the plugin may take to exit after Shutdown or SIGTERM.
        #[arg(long, default_value_t = 3000)]
        grace_ms: u64,
        /// The plugin's command and arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Talk to a running host.
    Ctl(Ctl),
}

fn main() -> ExitCode {
    // The host runs this binary again as each plugin generation's init.
    baton_host::pid_init::run_if_requested();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run {
            config,
            check: false,
        } => run::run(config),
        Cmd::Run {
            config,
            check: true,
        }
        | Cmd::Validate { config } => validate::validate(&config),
        Cmd::Ctl(args) => ctl::ctl(args),
        Cmd::Check {
            calls,
            timeout_ms,
            grace_ms,
            command,
        } => check(calls, timeout_ms, grace_ms, command),
    }
}
fn check(calls: Vec<String>, timeout_ms: u64, grace_ms: u64, command: Vec<String>) -> ExitCode {
    let mut parsed = Vec::new();
    for c in &calls {
        // A method alone is a call with an empty payload.
        let (method, payload) = c.split_once('=').unwrap_or((c.as_str(), ""));
        if method.is_empty() {
            eprintln!("error: --call {c:?}: expected METHOD or METHOD=PAYLOAD");
            return ExitCode::from(2);
        }
        parsed.push((method.to_owned(), payload.as_bytes().to_vec()));
    }
    let Some((program, args)) = command.split_first() else {
        eprintln!("error: give the plugin's command after `--`");
        return ExitCode::from(2);
    };
    let opts = baton_host::daemon::check::CheckOptions {
        command: PathBuf::from(program),
        args: args.to_vec(),
        calls: parsed,
        timeout: std::time::Duration::from_millis(timeout_ms),
        grace: std::time::Duration::from_millis(grace_ms),
    };
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = rt.block_on(baton_host::daemon::check::run(&opts));
    let mut failed = 0;
    for line in &report {
        let (word, text) = match &line.verdict {
            baton_host::daemon::check::Verdict::Pass(t) => ("pass", t),
            baton_host::daemon::check::Verdict::Fail(t) => {
                failed += 1;
                ("FAIL", t)
            }
            baton_host::daemon::check::Verdict::Skip(t) => ("skip", t),
        };
        println!("{word}  {:<24} {text}", line.name);
    }
    if failed == 0 {
        println!("all checks passed: {}", command.join(" "));
        ExitCode::SUCCESS
    } else {
        println!("{failed} check(s) failed: {}", command.join(" "));
        ExitCode::FAILURE
    }
}

/// A tokio runtime with `workers` threads, or the exit code that says it could not start.
pub(crate) fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}
