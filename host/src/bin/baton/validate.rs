//! `baton validate CONFIG` (and `baton run --check`): everything `baton run` checks
//! before it starts anything — the config's values, the programs and pins it names, the
//! socket paths — reported at once, without starting anything.

use std::path::Path;
use std::process::ExitCode;

use baton_host::{Config, Host};

use crate::run::EXIT_CONFIG;

pub(crate) fn validate(config_path: &Path) -> ExitCode {
    let mut errors = Vec::new();
    let config = match Config::load(config_path) {
        Ok(config) => Some(config),
        Err(e) => {
            errors.extend(e.to_string().lines().map(str::to_owned));
            None
        }
    };
    // The runtime directory comes from the environment, yet `baton run` refuses it as
    // configuration all the same.
    if let Err(e) = Host::runtime_base() {
        errors.push(e.to_string());
    }
    match config {
        Some(config) if errors.is_empty() => {
            let names: Vec<&str> = config.plugins.keys().map(String::as_str).collect();
            let count = match names.len() {
                1 => "1 plugin".to_owned(),
                n => format!("{n} plugins"),
            };
            if names.is_empty() {
                println!("config OK: {count}");
            } else {
                println!("config OK: {count}: {}", names.join(", "));
            }
            for (name, file) in config.waiting_for() {
                println!(
                    "note: plugin {name}: {} does not exist yet; `baton run` waits for it and \
                     starts the plugin when it appears (dev mode, reload = \"watch\")",
                    file.display()
                );
            }
            ExitCode::SUCCESS
        }
        _ => {
            for line in &errors {
                eprintln!("error: {line}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
