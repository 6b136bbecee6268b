//! Many plugins in one `baton run` daemon: its memory, its CPU while idle, and how fast
//! it notices one changed binary among all the watched ones.

use std::time::{Duration, Instant};

use baton_proto::host::{EventsRequest, ListRequest, PluginState};

use crate::procs::{Daemon, cpu_time, rss_bytes};
use crate::reload::replace_binary;
use crate::report::{Row, quantile, sorted};
use crate::{Bins, Error, Mode};

pub async fn run(
    bins: &Bins,
    mode: Mode,
    one_plugin_rss: Option<f64>,
    rows: &mut Vec<Row>,
) -> Result<(), Error> {
    let (plugins, idle, deploys) = match mode {
        Mode::Quick => (16usize, Duration::from_secs(3), 2usize),
        Mode::Full => (256, Duration::from_secs(30), 10),
    };
    // Each plugin gets its own binary path (hard links to one echo build), so replacing
    // one nudges only that plugin; all live in one watched directory.
    let bin_dir = tempfile::Builder::new()
        .prefix("baton-bench-bins-")
        .tempdir()?;
    let echo = bins.get("echo")?;
    let master = bin_dir.path().join("echo");
    std::fs::copy(&echo, &master)?;
    let mut toml = String::new();
    for i in 0..plugins {
        let path = bin_dir.path().join(format!("echo-{i:03}"));
        std::fs::hard_link(&master, &path)?;
        toml.push_str(&format!(
            "[plugins.e{i:03}]\ncommand = \"{}\"\nreload = \"watch\"\n\n",
            path.display()
        ));
    }
    let started = Instant::now();
    let mut daemon = Daemon::start(&bins.get("baton")?, &toml, Duration::from_secs(30)).await?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let list = daemon.client.list(ListRequest {}).await?.into_inner();
            let serving = list.plugins.iter().filter(|p| p.state == PluginState::Serving as i32).count();
            if serving == plugins {
                break;
            }
            if Instant::now() > deadline {
                return Err::<_, Error>(format!("only {serving} of {plugins} plugins serve after 300 s").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all_up = started.elapsed();
        // One call each, so every connection has carried a call, as in real use.
        for i in 0..plugins {
            daemon
                .client
                .invoke(baton_proto::host::InvokeRequest { plugin: format!("e{i:03}"), method: "echo".into(), payload: "x".into(), metadata: Default::default() })
                .await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = daemon.pid();
        let rss = rss_bytes(pid)? as f64 / (1u64 << 20) as f64;
        let cpu_before = cpu_time(pid)?;
        let t = Instant::now();
        tokio::time::sleep(idle).await;
        let cpu = (cpu_time(pid)? - cpu_before).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0;

        let mut events = daemon.client.events(EventsRequest::default()).await?.into_inner();
        let mut detect = Vec::new();
        for k in 0..deploys {
            let i = (k * 37) % plugins;
            let name = format!("e{i:03}");
            let t = Instant::now();
            replace_binary(&echo, &bin_dir.path().join(format!("echo-{i:03}")))?;
            loop {
                let next = tokio::time::timeout(Duration::from_secs(30), events.message())
                    .await
                    .map_err(|_| format!("no handover of {name} within 30 s"))??;
                match next {
                    Some(e) if e.plugin == name && e.kind == "handover_done" => break,
                    Some(e) if e.plugin == name && e.kind == "rollback" => return Err(e.message.into()),
                    Some(_) => {}
                    None => return Err("the daemon's event stream ended".into()),
                }
            }
            detect.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let detect = sorted(detect);
        let mut rss_row = Row::new("scale", format!("{plugins} plugins: daemon RSS (plugins not counted)"), rss, "MiB").target("≤ 64 MiB", rss <= 64.0);
        if let Some(one) = one_plugin_rss {
            rss_row = rss_row.baseline(one);
        }
        rows.push(Row::new("scale", format!("{plugins} plugins: start → all serving"), all_up.as_secs_f64() * 1e3, "ms"));
        rows.push(rss_row);
        rows.push(Row::new("scale", format!("{plugins} plugins: daemon CPU while idle over {} s", idle.as_secs()), cpu, "% of a core").target("< 1 %", cpu < 1.0));
        rows.push(Row::new("scale", format!("{plugins} plugins watched: binary replaced → serving, p50 of {deploys} (settle_ms 100)"), quantile(&detect, 0.5), "ms"));
        rows.push(Row::new("scale", format!("{plugins} plugins watched: binary replaced → serving, max"), quantile(&detect, 1.0), "ms"));
        Ok(())
    }
    .await;
    daemon.stop(Duration::from_secs(30)).await;
    result
}
