//! `tsdb --config tsdb.toml [--dev] [--plugin-dir DIR] [--without-auth] ...`: the database, its HTTP API and
//! its processing engine (baton, linked as a library). `--dev` runs the plugins in
//! baton's dev mode: a plugin reloads, state kept, whenever its file changes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use baton_host::{HostBuilder, Mode};
use tsdb::api::database_server::DatabaseServer;
use tsdb::api::shared_cache_server::SharedCacheServer;
use tsdb::catalog::Catalog;
use tsdb::config::Config;
use tsdb::db::Db;
use tsdb::host_api::HostApi;
use tsdb::plugin_dir::PluginDir;
use tsdb::processing_engine::{ProcessingEngine, PythonRunner};
use tsdb::system_tables::{EngineLogs, LogLayer, SystemSchema};
use tsdb::triggers::Engine;

/// A config the database cannot use (EX_USAGE, as baton's own).
const EXIT_CONFIG: u8 = 64;
/// How long a stop waits for the buffers to be written as Parquet.
const SHUTDOWN_SNAPSHOT: std::time::Duration = std::time::Duration::from_secs(60);

fn usage() -> ExitCode {
    eprintln!(
        "usage: tsdb --config tsdb.toml [--dev] [--plugin-dir DIR] [--without-auth] \
         [--admin-token-file FILE] [--disable-authz health,ping]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut config, mut flags) = (None, Flags::default());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--dev" => flags.dev = true,
            "--without-auth" => flags.without_auth = true,
            "--plugin-dir" => match args.next() {
                Some(dir) => flags.plugin_dir = Some(PathBuf::from(dir)),
                None => return usage(),
            },
            "--admin-token-file" => match args.next() {
                Some(file) => flags.admin_token_file = Some(PathBuf::from(file)),
                None => return usage(),
            },
            "--disable-authz" => match args.next() {
                Some(list) => {
                    flags.disable_authz =
                        Some(list.split(',').map(|s| s.trim().to_owned()).collect())
                }
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let Some(config) = config else {
        return usage();
    };
    // tsdb's log (filtered by TSDB_LOG) and, unfiltered by it, the lines kept for
    // `system.processing_engine_logs`.
    let logs = Arc::new(EngineLogs::default());
    {
        use tracing_subscriber::prelude::*;
        let filter = tracing_subscriber::EnvFilter::try_from_env("TSDB_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("info,{}=warn", tsdb::containment::CALL_LOG))
        });
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only for a person at a terminal: a log file or a pipe
                    // gets plain text, and so does anyone who set NO_COLOR.
                    .with_ansi(
                        std::io::IsTerminal::is_terminal(&std::io::stderr())
                            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
                    )
                    .with_filter(filter),
            )
            .with(LogLayer(logs.clone()))
            .init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tsdb: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, flags, logs))
}

/// What the command line sets over tsdb.toml.
#[derive(Default)]
struct Flags {
    dev: bool,
    plugin_dir: Option<PathBuf>,
    without_auth: bool,
    admin_token_file: Option<PathBuf>,
    disable_authz: Option<Vec<String>>,
}

async fn run(path: PathBuf, flags: Flags, logs: Arc<EngineLogs>) -> ExitCode {
    let Flags {
        dev, plugin_dir, ..
    } = flags;
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("error: {line}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut plugins = match baton_host::Config::load(&config.plugins) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if dev {
        plugins.mode = Mode::Dev;
    }
    if plugin_dir.is_some() {
        config.plugin_dir = plugin_dir;
    }
    config.without_auth |= flags.without_auth;
    if flags.admin_token_file.is_some() {
        config.admin_token_file = flags.admin_token_file;
    }
    if let Some(list) = flags.disable_authz {
        config.disable_authz = list;
    }
    let open = match tsdb::config::open_paths(&config.disable_authz) {
        Ok(open) => open,
        Err(e) => {
            eprintln!("error: --disable-authz: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let db = match Db::open(&config.data_dir, config.db_options()) {
        Ok(db) => db,
        Err(e) => {
            eprintln!(
                "error: cannot open the data in {}: {e}",
                config.data_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let catalog = match Catalog::open(&config.data_dir) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plugin_dir = match config
        .plugin_dir
        .as_deref()
        .map(PluginDir::open)
        .transpose()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot use the plugin directory (`plugin_dir`, --plugin-dir): {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let tokens = Arc::new(tsdb::tokens::Tokens::new(
        catalog.clone(),
        !config.without_auth,
        open,
    ));
    if let Some(file) = &config.admin_token_file
        && let Err(e) = tokens.preconfigure(file)
    {
        eprintln!("error: the admin token file (`admin_token_file`, --admin-token-file): {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let no_token_yet = catalog.read(|s| s.tokens.is_empty());
    let runner = PythonRunner {
        python: config.python.clone(),
        python_path: config.python_path.clone(),
        call_timeout_ms: config.trigger_call_timeout_ms,
        max_memory_mb: config.trigger_max_memory_mb,
        envs: tsdb::plugin_env::Environments::new(&config.data_dir, &config.python),
    };
    let with_triggers =
        ProcessingEngine::plugins_config(&plugins, &catalog, plugin_dir.as_ref(), &runner);
    let listener = match tsdb::http::bind(config.http).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {} (`http`): {e}", config.http);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let engine_cell: Arc<OnceLock<Arc<Engine>>> = Arc::default();
    let api = HostApi {
        db: db.clone(),
        engine: engine_cell.clone(),
        reach: config.plugin_databases,
    };
    let host = match HostBuilder::new(&with_triggers)
        .with_service(DatabaseServer::new(api))
        .with_service(SharedCacheServer::new(
            tsdb::shared_cache::SharedCacheService::default(),
        ))
        .start()
        .await
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: the processing engine did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = match Engine::start(&config.triggers, &host, &with_triggers) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            host.shutdown().await;
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _ = engine_cell.set(engine.clone());
    logs.follow(&host);
    tsdb::containment::watch_memory(engine.clone(), &host);
    {
        let catalog = catalog.clone();
        db.set_known_databases(Arc::new(move |name: &str| {
            catalog.state().databases.contains(name)
        }));
    }
    {
        let (engine, catalog) = (engine.clone(), catalog.clone());
        db.set_system_tables(Arc::new(move |database: &str| {
            Arc::new(SystemSchema {
                database: database.to_owned(),
                engine: engine.clone(),
                catalog: catalog.clone(),
                logs: logs.clone(),
            }) as Arc<dyn datafusion::catalog::SchemaProvider>
        }));
    }
    let processing = ProcessingEngine::start(
        host,
        with_triggers,
        plugin_dir,
        runner,
        catalog,
        engine.clone(),
    );
    let addr = listener.local_addr().map_or(config.http, |a| a);
    if config.without_auth {
        // With a plugin directory, whoever reaches the port can then upload a file
        // and make a trigger run it.
        tracing::warn!(
            "tsdb: tokens are not checked (--without-auth): anyone who reaches {addr} may write, \
             query{}",
            if config.plugin_dir.is_some() {
                ", upload plugins and make triggers run them"
            } else {
                " and make databases"
            }
        );
    } else if no_token_yet {
        tracing::warn!(
            "tsdb: every request needs a token and none exists yet: the first POST \
             /api/v3/configure/token/admin to {addr} makes the operator token (shown once), \
             whoever sends it; --admin-token-file gives the first token instead"
        );
    }
    tracing::info!(
        "tsdb: serving http://{addr} ({} triggers{})",
        engine.status().len(),
        if dev { ", dev mode" } else { "" }
    );
    let data = db.clone();
    let server = tokio::spawn(tsdb::http::serve(
        listener,
        tsdb::http::Api {
            db,
            engine,
            processing: processing.clone(),
            plugin_tests: Arc::new(tsdb::plugin_test::PluginTests::new(config.plugin_databases)),
            tokens,
        },
    ));
    wait_for_stop().await;
    tracing::info!("tsdb: stopping");
    server.abort();
    processing.shutdown().await;
    // What is still only in the log goes to Parquet, so the next start replays nothing;
    // a stop that cannot wait for it loses nothing either (the log stays).
    match tokio::time::timeout(SHUTDOWN_SNAPSHOT, data.snapshot()).await {
        Ok(Ok(())) => tracing::info!("tsdb: stopped, the data persisted as Parquet"),
        Ok(Err(e)) => {
            tracing::warn!("tsdb: stopped; the last snapshot failed ({e}): the log keeps the data")
        }
        Err(_) => tracing::warn!(
            "tsdb: stopped before the last snapshot ended ({SHUTDOWN_SNAPSHOT:?}): the log keeps the data"
        ),
    }
    ExitCode::SUCCESS
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
