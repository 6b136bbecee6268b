//! Scheduled triggers: `every:D` fires at the multiples of D since the epoch (InfluxDB 3
//! hands that slot to the plugin as its call time), `cron:` at each upcoming time of its
//! expression, each call under the trigger's error policy and call bound.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::api::ScheduledCall;
use crate::triggers::Trigger;

/// The first slot of `every` after `now`: InfluxDB 3 fires `every:D` at the multiples
/// of D since the epoch, and hands that slot to the plugin as its call time.
fn next_slot(now: SystemTime, every: Duration) -> SystemTime {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let step = every.as_nanos().max(1);
    let next = (since / step + 1) * step;
    let next = u64::try_from(next).unwrap_or(u64::MAX);
    SystemTime::UNIX_EPOCH + Duration::from_nanos(next)
}

pub(crate) async fn every_interval(trigger: Arc<Trigger>, every: Duration) {
    let mut last = SystemTime::UNIX_EPOCH;
    loop {
        // The wall clock may step back under the monotonic timer: a slot fires once.
        let slot = next_slot(SystemTime::now().max(last), every);
        last = slot;
        // A slot missed (the machine asleep, a call longer than the interval) is
        // skipped, as a missed tick was before: the next one is computed from now.
        let wait = slot
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        scheduled(&trigger, slot).await;
    }
}

pub(crate) async fn on_cron(trigger: Arc<Trigger>, schedule: cron::Schedule) {
    loop {
        let Some(next) = schedule.upcoming(chrono::Utc).next() else {
            return;
        };
        let wait = (next - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        scheduled(&trigger, SystemTime::from(next)).await;
    }
}

async fn scheduled(trigger: &Trigger, at: SystemTime) {
    if !trigger.enabled() {
        return;
    }
    let call = ScheduledCall {
        trigger: trigger.config.name.clone(),
        args: trigger.config.args.clone().into_iter().collect(),
        database: trigger.config.database.clone(),
        call_time_ns: at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
    };
    let outcome = trigger
        .run(|| {
            let (mut client, call) = (trigger.client(), call.clone());
            let call = async move {
                client
                    .on_schedule(call)
                    .await
                    .map(tonic::Response::into_inner)
            };
            trigger.bounded("process_scheduled_call", call)
        })
        .await;
    if let Ok(result) = outcome {
        trigger.note(result.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fires_at_multiples_of_its_interval_since_the_epoch() {
        let at = |s: u64, ms: u64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms)
        };
        let ten = Duration::from_secs(10);
        assert_eq!(next_slot(at(1_700_000_003, 500), ten), at(1_700_000_010, 0));
        // On a slot, the next one: the slot itself has fired.
        assert_eq!(next_slot(at(1_700_000_010, 0), ten), at(1_700_000_020, 0));
        let half = Duration::from_millis(500);
        assert_eq!(next_slot(at(7, 499), half), at(7, 500));
    }
}
