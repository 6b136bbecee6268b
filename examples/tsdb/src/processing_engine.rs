//! Triggers and databases made and deleted at run time, as InfluxDB 3's configure API
//! makes them: each trigger is a baton plugin added to (or removed from) the running
//! host by a config reload, and each change is in the catalog before it is answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use baton_host::Host;
use serde::Deserialize;

use crate::catalog::{Catalog, CatalogError, MAX_DATABASES, MAX_TRIGGERS, TriggerDefinition};
pub use crate::catalog::{MAX_ARGUMENT, MAX_ARGUMENTS, MAX_TRIGGER_NAME};
use crate::config::{ErrorPolicy, TriggerConfig};
use crate::db::Db;
use crate::plugin_dir::PluginDir;
use crate::plugin_env::EnvError;
pub use crate::plugin_launch::PythonRunner;
use crate::plugin_launch::{plugin_for, prepare_environment};
use crate::triggers::Engine;

/// A refused or failed change: the HTTP status, and a message naming the field.
#[derive(Debug)]
pub struct Refused(pub StatusCode, pub String);

impl From<CatalogError> for Refused {
    fn from(e: CatalogError) -> Self {
        let status = if e.too_large {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self(status, e.to_string())
    }
}

fn bad(message: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, message.into())
}

/// `POST /api/v3/configure/processing_engine_trigger`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTrigger {
    pub db: String,
    pub plugin_filename: String,
    pub trigger_name: String,
    pub trigger_specification: String,
    #[serde(default)]
    pub trigger_arguments: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub trigger_settings: TriggerSettings,
    #[serde(default)]
    pub disabled: bool,
}

/// A trigger's settings, as InfluxDB names them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSettings {
    #[serde(default)]
    pub run_async: bool,
    /// `log`, `retry` or `disable` (InfluxDB's clients send `Log`, ...); read by hand
    /// so that a wrong one is refused naming this field.
    #[serde(default)]
    pub error_behavior: Option<String>,
}

impl TriggerSettings {
    fn error_policy(&self) -> Result<ErrorPolicy, Refused> {
        match self
            .error_behavior
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("log") => Ok(ErrorPolicy::Log),
            Some("retry") => Ok(ErrorPolicy::Retry),
            Some("disable") => Ok(ErrorPolicy::Disable),
            Some(_) => Err(bad(format!(
                "trigger_settings.error_behavior: {:?} is not log, retry or disable",
                self.error_behavior.as_deref().unwrap_or_default()
            ))),
        }
    }
}

/// The host, and the config it runs now (plugins.toml's plugins and the triggers').
struct Running {
    host: Host,
    config: baton_host::Config,
}

/// See the module's documentation.
pub struct ProcessingEngine {
    /// Held for a whole change, so that changes apply one at a time.
    running: tokio::sync::Mutex<Option<Running>>,
    plugin_dir: Option<PluginDir>,
    runner: PythonRunner,
    catalog: Arc<Catalog>,
    engine: Arc<Engine>,
}

impl ProcessingEngine {
    /// `base` with a plugin for each trigger of `catalog` whose file is there; the
    /// others are logged and left in the catalog, to start when their file is back.
    pub fn plugins_config(
        base: &baton_host::Config,
        catalog: &Catalog,
        plugin_dir: Option<&PluginDir>,
        runner: &PythonRunner,
    ) -> baton_host::Config {
        let mut config = base.clone();
        for (name, def) in catalog.state().triggers {
            if base.plugins.contains_key(&plugin_name(&name)) {
                tracing::error!(trigger = %name, "not started: its plugin's name is taken in the plugins' config");
                continue;
            }
            match plugin_for(plugin_dir, runner, &def) {
                Ok(plugin) => {
                    config.plugins.insert(plugin_name(&name), plugin);
                }
                Err(e) => tracing::error!(trigger = %name, "not started: {e}"),
            }
        }
        config
    }

    /// Starts the catalog's triggers on `host`, started with `config` (from
    /// [`Self::plugins_config`]).
    pub fn start(
        host: Host,
        config: baton_host::Config,
        plugin_dir: Option<PluginDir>,
        runner: PythonRunner,
        catalog: Arc<Catalog>,
        engine: Arc<Engine>,
    ) -> Arc<Self> {
        for (name, def) in catalog.state().triggers {
            let call_timeout = config
                .plugins
                .get(&plugin_name(&name))
                .map(baton_host::PluginConfig::call_timeout);
            if let (Some(plugin), Some(call_timeout)) =
                (host.plugin(&plugin_name(&name)), call_timeout)
                && let Err(e) = engine.add(
                    &trigger_config(&name, &def),
                    plugin,
                    !def.disabled,
                    call_timeout,
                    true,
                )
            {
                tracing::error!(trigger = %name, "not started: {e}");
            }
        }
        engine.record_databases_in(catalog.clone());
        let this = Arc::new(Self {
            running: tokio::sync::Mutex::new(Some(Running { host, config })),
            plugin_dir,
            runner,
            catalog,
            engine,
        });
        crate::plugin_requirements::follow(&this);
        this
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// How plugin files run, with their environments.
    pub fn runner(&self) -> &PythonRunner {
        &self.runner
    }

    pub fn plugin_dir(&self) -> Option<&PluginDir> {
        self.plugin_dir.as_ref()
    }

    /// Runs `change` to its end on a task of its own. hyper drops a handler's future
    /// when its client disconnects; dropped between the host's reload and the catalog's
    /// write, a change would leave a plugin running that neither the catalog nor the
    /// engine knows.
    async fn whole<F>(self: &Arc<Self>, change: impl FnOnce(Arc<Self>) -> F) -> Result<(), Refused>
    where
        F: Future<Output = Result<(), Refused>> + Send + 'static,
    {
        tokio::spawn(change(self.clone()))
            .await
            .unwrap_or_else(|e| {
                Err(Refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the change did not finish: {e}"),
                ))
            })
    }

    /// Makes trigger `request` and starts its plugin; every field is checked before
    /// anything changes, and a plugin that cannot be added leaves nothing behind.
    pub async fn create_trigger(self: &Arc<Self>, request: CreateTrigger) -> Result<(), Refused> {
        self.whole(|this| async move { this.create_trigger_whole(request).await })
            .await
    }

    async fn create_trigger_whole(&self, request: CreateTrigger) -> Result<(), Refused> {
        let name = request.trigger_name.clone();
        let def = TriggerDefinition {
            db: request.db,
            plugin_filename: request.plugin_filename,
            trigger_specification: request.trigger_specification,
            trigger_arguments: request.trigger_arguments,
            run_async: request.trigger_settings.run_async,
            error_behavior: request.trigger_settings.error_policy()?,
            disabled: request.disabled,
        };
        def.check(&name).map_err(bad)?;
        prepare_environment(self.plugin_dir.as_ref(), &self.runner, &def)
            .await
            .map_err(|e| match e {
                EnvError::Refused(m) => bad(m),
                EnvError::Failed(m) => Refused(StatusCode::INTERNAL_SERVER_ERROR, m),
            })?;
        let plugin = plugin_for(self.plugin_dir.as_ref(), &self.runner, &def).map_err(bad)?;
        let mut running = self.running.lock().await;
        let Some(Running { host, config }) = running.as_mut() else {
            return Err(Refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "tsdb is stopping".into(),
            ));
        };
        let state = self.catalog.state();
        if state.triggers.contains_key(&name) || self.engine.database_of(&name).is_some() {
            return Err(Refused(
                StatusCode::CONFLICT,
                format!("trigger_name: a trigger named {name:?} exists"),
            ));
        }
        if state.triggers.len() >= MAX_TRIGGERS {
            return Err(Refused(
                StatusCode::CONFLICT,
                format!(
                    "trigger_name: tsdb holds {MAX_TRIGGERS} triggers made over the API already"
                ),
            ));
        }
        if config.plugins.contains_key(&plugin_name(&name)) {
            return Err(Refused(
                StatusCode::CONFLICT,
                format!(
                    "trigger_name: its plugin would be {:?}, a plugin of the plugins' config",
                    plugin_name(&name)
                ),
            ));
        }
        let call_timeout = plugin.call_timeout();
        let mut wanted = config.clone();
        wanted.plugins.insert(plugin_name(&name), plugin);
        let report = host.reload_config(&wanted).await;
        let Some(handle) = host.plugin(&plugin_name(&name)) else {
            return Err(Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the plugin of trigger {name:?} was not added: {:?}",
                    report.problems
                ),
            ));
        };
        let added = self
            .engine
            .add(
                &trigger_config(&name, &def),
                handle,
                !def.disabled,
                call_timeout,
                true,
            )
            .map_err(|e| Refused(StatusCode::CONFLICT, format!("trigger_name: {e}")));
        let recorded = added.and_then(|()| {
            self.catalog
                .update(|s| {
                    s.databases.insert(def.db.clone());
                    s.triggers.insert(name.clone(), def.clone());
                    Ok::<_, CatalogError>(())
                })
                .map_err(|e| {
                    // The arguments are what can make a trigger big (a control
                    // character is six bytes in JSON).
                    if e.too_large {
                        bad(format!("trigger_arguments: {e}"))
                    } else {
                        Refused::from(e)
                    }
                })
        });
        if let Err(e) = recorded {
            self.engine.remove(&name);
            host.reload_config(config).await;
            return Err(e);
        }
        *config = wanted;
        tracing::info!(trigger = %name, "trigger made over the API ({})", report.changes.join("; "));
        Ok(())
    }

    /// Runs trigger `name`'s plugin as `plugin` says from now on (a new environment's
    /// python): baton hands it over to a new process, state kept. `false` when it
    /// already runs so, or the trigger is gone.
    pub async fn replace_plugin(
        &self,
        name: &str,
        plugin: baton_host::PluginConfig,
    ) -> Result<bool, String> {
        let mut running = self.running.lock().await;
        let Some(Running { host, config }) = running.as_mut() else {
            return Ok(false);
        };
        let key = plugin_name(name);
        let Some(current) = config.plugins.get(&key) else {
            return Ok(false);
        };
        if current.command == plugin.command && current.args == plugin.args {
            return Ok(false);
        }
        let mut wanted = config.clone();
        wanted.plugins.insert(key.clone(), plugin);
        let report = host.reload_config(&wanted).await;
        if !report.problems.is_empty() {
            return Err(report.problems.join("; "));
        }
        *config = wanted;
        Ok(true)
    }

    /// Deletes trigger `name` of database `db` and stops its plugin; an enabled one
    /// only with `force`, as InfluxDB does.
    pub async fn delete_trigger(
        self: &Arc<Self>,
        db: &str,
        name: &str,
        force: bool,
    ) -> Result<(), Refused> {
        let (db, name) = (db.to_owned(), name.to_owned());
        self.whole(|this| async move { this.delete_trigger_whole(&db, &name, force).await })
            .await
    }

    async fn delete_trigger_whole(&self, db: &str, name: &str, force: bool) -> Result<(), Refused> {
        let mut running = self.running.lock().await;
        let Some(Running { host, config }) = running.as_mut() else {
            return Err(Refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "tsdb is stopping".into(),
            ));
        };
        let state = self.catalog.state();
        let Some(def) = state.triggers.get(name) else {
            let why = if self.engine.database_of(name).is_some() {
                "is configured in tsdb.toml; remove it there"
            } else {
                "does not exist"
            };
            return Err(Refused(
                StatusCode::NOT_FOUND,
                format!("trigger_name: trigger {name:?} {why}"),
            ));
        };
        if def.db != db {
            return Err(Refused(
                StatusCode::NOT_FOUND,
                format!(
                    "db: trigger {name:?} is in database {:?}, not {db:?}",
                    def.db
                ),
            ));
        }
        let enabled = self
            .engine
            .status()
            .iter()
            .any(|t| t.name == name && t.enabled);
        if enabled && !force {
            return Err(Refused(
                StatusCode::CONFLICT,
                format!("force: trigger {name:?} is enabled; disable it first or pass force=true"),
            ));
        }
        self.catalog.update(|s| {
            s.triggers.remove(name);
            Ok::<_, Refused>(())
        })?;
        self.engine.remove(name);
        config.plugins.remove(&plugin_name(name));
        let report = host.reload_config(config).await;
        tracing::info!(trigger = %name, "trigger deleted over the API ({})", report.changes.join("; "));
        Ok(())
    }

    /// Enables or disables trigger `name` (of `db`, when given); one made over the API
    /// keeps the change across restarts.
    pub async fn set_enabled(
        self: &Arc<Self>,
        db: Option<&str>,
        name: &str,
        enabled: bool,
    ) -> Result<(), Refused> {
        let (db, name) = (db.map(str::to_owned), name.to_owned());
        self.whole(|this| async move {
            // Held so that a create or delete of the same trigger, between this
            // catalog write and the engine's change, cannot lose this one on restart.
            let _running = this.running.lock().await;
            this.set_enabled_locked(db.as_deref(), &name, enabled)
        })
        .await
    }

    fn set_enabled_locked(
        &self,
        db: Option<&str>,
        name: &str,
        enabled: bool,
    ) -> Result<(), Refused> {
        let Some(database) = self.engine.database_of(name) else {
            return Err(Refused(
                StatusCode::NOT_FOUND,
                format!("trigger_name: no trigger named {name:?}"),
            ));
        };
        if db.is_some_and(|db| db != database) {
            return Err(Refused(
                StatusCode::NOT_FOUND,
                format!("db: trigger {name:?} is in database {database:?}"),
            ));
        }
        if self.catalog.state().triggers.contains_key(name) {
            self.catalog.update(|s| {
                if let Some(def) = s.triggers.get_mut(name) {
                    def.disabled = !enabled;
                }
                Ok::<_, Refused>(())
            })?;
        }
        self.engine.set_enabled(name, enabled);
        Ok(())
    }

    /// Records database `db` (`POST /api/v3/configure/database`); one that exists is a
    /// conflict, as in InfluxDB.
    pub async fn create_database(self: &Arc<Self>, db: &str) -> Result<(), Refused> {
        crate::db::check_database_name(db).map_err(|e| bad(format!("db: {e}")))?;
        let db = db.to_owned();
        self.whole(|this| async move {
            // Held so that changes to databases and triggers apply one at a time.
            let _running = this.running.lock().await;
            this.create_database_locked(&db)
        })
        .await
    }

    fn create_database_locked(&self, db: &str) -> Result<(), Refused> {
        self.catalog.update(|s| {
            if s.databases.contains(db) {
                return Err(Refused(
                    StatusCode::CONFLICT,
                    format!("db: database {db:?} exists"),
                ));
            }
            if s.databases.len() >= MAX_DATABASES {
                return Err(Refused(
                    StatusCode::CONFLICT,
                    format!("db: tsdb holds {MAX_DATABASES} databases already"),
                ));
            }
            s.databases.insert(db.to_owned());
            Ok(())
        })
    }

    /// Forgets database `db`; refused while a trigger works in it.
    /// Deletes database `db` with its data; refused while it has triggers.
    pub async fn delete_database(self: &Arc<Self>, db: &str, data: &Db) -> Result<(), Refused> {
        let (db, data) = (db.to_owned(), data.clone());
        self.whole(|this| async move {
            // Held so that a trigger being made in `db` (checked, not yet in the
            // engine) is seen before the database goes.
            let _running = this.running.lock().await;
            this.delete_database_locked(&db, &data).await
        })
        .await
    }

    async fn delete_database_locked(&self, db: &str, data: &Db) -> Result<(), Refused> {
        let users: Vec<String> = self
            .engine
            .status()
            .into_iter()
            .filter(|t| t.database == db)
            .map(|t| t.name)
            .collect();
        if !users.is_empty() {
            return Err(Refused(
                StatusCode::CONFLICT,
                format!("db: database {db:?} has triggers {users:?}; delete them first"),
            ));
        }
        if !self.catalog.read(|s| s.databases.contains(db)) && !data.exists(db) {
            return Err(Refused(
                StatusCode::NOT_FOUND,
                format!("db: no database named {db:?}"),
            ));
        }
        // The data first: once it is gone for good, the name goes; a failure between
        // leaves a name without data, never data without its name.
        data.drop_data(db, None).await.map_err(|e| {
            Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("db: database {db:?} not deleted: {e}"),
            )
        })?;
        self.catalog.update(|s| {
            s.databases.remove(db);
            Ok(())
        })
    }

    /// Stops the host and every plugin.
    pub async fn shutdown(&self) {
        if let Some(running) = self.running.lock().await.take() {
            running.host.shutdown().await;
        }
    }
}

/// The baton plugin that runs trigger `name`.
fn plugin_name(name: &str) -> String {
    format!("trigger-{name}")
}

/// Trigger `name` as the engine runs it.
fn trigger_config(name: &str, def: &TriggerDefinition) -> TriggerConfig {
    TriggerConfig {
        name: name.to_owned(),
        plugin: plugin_name(name),
        on: def.trigger_specification.clone(),
        database: def.db.clone(),
        error_policy: def.error_behavior,
        args: def.trigger_arguments.clone().unwrap_or_default(),
        run_async: def.run_async,
    }
}
