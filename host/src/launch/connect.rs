//! Bringing a started process to SERVING: its health service, then `Describe` (protocol
//! version, the services the config requires), then the application's API check.

use std::path::Path;
use std::time::Duration;

use baton_proto::PROTOCOL_VERSION;
use baton_proto::plugin::{DescribeRequest, DescribeResponse};

use super::{Launcher, PluginRpc, StartError, StderrExcerpt, TokenService, UnixClient, plugin_rpc};

impl Launcher {
    /// Connects to the process's socket and waits, until `deadline`, for it to report
    /// SERVING and describe itself as this plugin must.
    pub(super) async fn connect(
        &self,
        socket: &Path,
        token: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(PluginRpc, TokenService<UnixClient>, DescribeResponse), StartError> {
        let timeout = self.config.handshake_timeout();
        let channel = UnixClient::with_spin(socket, Duration::from_micros(self.config.spin_us));
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let mut last = String::from("no answer");
        loop {
            let check = health.check(tonic_health::pb::HealthCheckRequest {
                service: "baton.plugin.v1.Plugin".into(),
            });
            match tokio::time::timeout_at(deadline, check).await {
                Ok(Ok(resp))
                    if resp.get_ref().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving
                            as i32 =>
                {
                    break;
                }
                Ok(Ok(resp)) => last = format!("health status {}", resp.get_ref().status),
                Ok(Err(status)) => last = format!("health check failed: {}", status.message()),
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StartError::Timeout {
                    what: format!(
                        "did not report SERVING for baton.plugin.v1.Plugin on its health service (last: {last})"
                    ),
                    timeout,
                    stderr: StderrExcerpt::default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (mut rpc, transport) = plugin_rpc(channel, token, self.config.max_message_bytes)
            .ok_or_else(|| StartError::Handshake("internal: token is not valid metadata".into()))?;
        let describe =
            match tokio::time::timeout_at(deadline, rpc.describe(DescribeRequest {})).await {
                Ok(Ok(resp)) => resp.into_inner(),
                Ok(Err(status)) => {
                    return Err(StartError::Handshake(format!(
                        "Describe failed: {} ({:?})",
                        status.message(),
                        status.code()
                    )));
                }
                Err(_) => {
                    return Err(StartError::Timeout {
                        what: "did not answer Describe".into(),
                        timeout,
                        stderr: StderrExcerpt::default(),
                    });
                }
            };
        if describe.protocol_version != PROTOCOL_VERSION {
            return Err(StartError::Handshake(format!(
                "Describe reports protocol version {}, expected {PROTOCOL_VERSION}",
                describe.protocol_version
            )));
        }
        let missing: Vec<&str> = self
            .config
            .services
            .iter()
            .filter(|wanted| !describe.services.contains(wanted))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let offered = if describe.services.is_empty() {
                "none".to_owned()
            } else {
                describe.services.join(", ")
            };
            return Err(StartError::Mismatch(format!(
                "does not serve {} (required by `services` in the config); it serves: {offered}",
                missing.join(", ")
            )));
        }
        if let Some(api) = &self.api {
            self.check_api(api, &transport, deadline).await?;
        }
        Ok((rpc, transport, describe))
    }

    /// Compares the services the new process describes over reflection with the
    /// application's descriptors; any difference that breaks a call refuses it.
    async fn check_api(
        &self,
        api: &Result<prost_reflect::DescriptorPool, String>,
        transport: &TokenService<UnixClient>,
        deadline: tokio::time::Instant,
    ) -> Result<(), StartError> {
        let expected = api.as_ref().map_err(|why| StartError::Refused {
            path: self.config.command.clone(),
            why: format!("api_descriptors: {why}"),
        })?;
        for service in &self.config.services {
            let offered = tokio::time::timeout_at(
                deadline,
                crate::api::reflect::descriptors(transport.clone(), service),
            )
            .await
            .map_err(|_| StartError::Timeout {
                what: format!("did not describe {service} over reflection"),
                timeout: self.config.handshake_timeout(),
                stderr: StderrExcerpt::default(),
            })?
            .map_err(|e| {
                StartError::Handshake(format!(
                    "cannot check its {service} against api_descriptors: {e}"
                ))
            })?;
            let problems = crate::api::api_check::incompatibilities(expected, &offered, service);
            if !problems.is_empty() {
                return Err(StartError::Mismatch(format!(
                    "its {service} is not compatible with the application's (api_descriptors): {}",
                    problems.join("; ")
                )));
            }
        }
        Ok(())
    }
}
