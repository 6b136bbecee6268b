//! Every SDK refuses to start without a launch token, and takes a call only with
//! exactly one `x-baton-token` header, and the right one.

use std::time::Duration;

use baton_proto::plugin::DescribeRequest;
use baton_proto::plugin::plugin_client::PluginClient;
use baton_tests::{SDK_START, SDK_TEST_TOKEN, SdkPlugin, for_each_sdk, with_tokens};

#[tokio::test]
async fn every_sdk_refuses_to_start_with_no_token_or_an_empty_one() {
    for_each_sdk(refuses_to_start_without_a_token).await;
}

async fn refuses_to_start_without_a_token(plugin: SdkPlugin) -> Result<(), String> {
    for token in [None, Some("")] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plugin.sock");
        let (code, stderr) = plugin.launch(&path, token).exit(SDK_START).await?;
        if code.is_none_or(|c| c == 0) || !stderr.contains("BATON_PLUGIN_TOKEN") {
            return Err(format!(
                "with the token {token:?} it exited with {code:?}, not naming \
                 BATON_PLUGIN_TOKEN:\n{stderr}"
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_sdk_takes_exactly_one_right_token_header() {
    for_each_sdk(takes_one_right_token_header).await;
}

async fn takes_one_right_token_header(plugin: SdkPlugin) -> Result<(), String> {
    const WRONG: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let dir = tempfile::tempdir().expect("temp dir");
    let mut launched = plugin.launch(&dir.path().join("plugin.sock"), Some(SDK_TEST_TOKEN));
    launched.handshake(SDK_START).await?;
    let mut client = PluginClient::new(launched.channel().await);
    let mut wrong = Vec::new();
    for (tokens, accepted) in [
        (&[SDK_TEST_TOKEN][..], true),
        (&[SDK_TEST_TOKEN, SDK_TEST_TOKEN][..], false),
        (&[WRONG, SDK_TEST_TOKEN][..], false),
        (&[SDK_TEST_TOKEN, WRONG][..], false),
        (&[WRONG][..], false),
        (&[""][..], false),
        (&[][..], false),
    ] {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client.describe(with_tokens(DescribeRequest {}, tokens)),
        )
        .await
        .map_err(|_| format!("no answer within 10 s to {tokens:?}"))?;
        match (answer, accepted) {
            (Ok(_), true) => {}
            (Err(status), false) if status.code() == tonic::Code::Unauthenticated => {}
            (Ok(_), _) => wrong.push(format!("{tokens:?} accepted")),
            (Err(status), _) => wrong.push(format!("{tokens:?} answered {status:?}")),
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("token headers: {}", wrong.join("; ")))
    }
}
