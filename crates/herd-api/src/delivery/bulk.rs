//! Dapr's bulk subscribe: a subscription's messages POSTed to the app in batches.
//!
//! As daprd does it: a batch is sent once it holds `maxMessagesCount` messages, or
//! `maxAwaitDurationMs` after its first message arrived. Its entries are grouped by route (the
//! subscription's rules, per entry) and each group is one POST of Dapr's bulk envelope,
//! `{"id", "type": "com.dapr.event.sent.bulk", "topic", "pubsubname", "metadata", "entries":
//! [{"entryId", "event", "metadata", "contentType"}]}` as `application/json`; a CloudEvent goes
//! in as its JSON, any other message base64-encoded as `application/octet-stream`. The app
//! answers `{"statuses": [{"entryId", "status"}]}`: SUCCESS acknowledges, DROP drops, RETRY,
//! an empty or unknown status, or no status for an entry retries it; a 2xx whose body is not
//! that retries every entry, a 404 drops every entry (as for single deliveries), any other
//! answer or none retries every entry. The inbound policy's retries resend only the entries
//! still to retry. Each entry is then settled on its own (`settle.rs`). An entry no rule matches,
//! when the subscription has no default route, is not sent: as daprd's bulk subscription does,
//! it goes to the dead-letter topic when there is one, else it is acknowledged.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use herd_config::{BulkSubscribe, SubscriptionSpec};
use herd_pubsub::{Delivery, PubSub};
use herd_resilience::{Policy, RunError};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::event::EventHead;
use super::post::{delivery_request, exchange};
use super::subscription::Subscription;
use super::{App, Stopping, Verdict, delivery_outcome, path_for, settle, span};
use crate::cloudevent::uuid;

/// What a subscription's batcher works with.
pub(super) struct Batching {
    pub app: App,
    pub sub: Arc<Subscription>,
    pub broker: Arc<dyn PubSub>,
    pub policy: Arc<Policy>,
    pub settings: BulkSubscribe,
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
}

/// Gathers deliveries into batches and spawns one task per batch, until `stop` or until the
/// subscription's loop is gone.
pub(super) async fn batcher(b: Batching, mut deliveries: mpsc::Receiver<Box<dyn Delivery>>) {
    let max = b.settings.max_messages.max(1) as usize;
    let mut batch: Vec<Box<dyn Delivery>> = Vec::with_capacity(max);
    let mut deadline = Instant::now();
    loop {
        let next = tokio::select! {
            _ = b.stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline), if !batch.is_empty() => None,
            next = deliveries.recv() => match next {
                Some(d) => Some(d),
                None => return,
            },
        };
        if let Some(delivery) = next {
            if batch.is_empty() {
                deadline = Instant::now() + b.settings.max_await;
            }
            batch.push(delivery);
            // Take whatever is queued already, as daprd drains its channel.
            while batch.len() < max {
                match deliveries.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            if batch.len() < max {
                continue;
            }
        }
        let full = std::mem::replace(&mut batch, Vec::with_capacity(max));
        b.tracker.spawn(deliver_batch(
            b.app.clone(),
            b.sub.clone(),
            b.broker.clone(),
            b.policy.clone(),
            full,
            b.stop.clone(),
        ));
    }
}

/// One batch: each route's entries POSTed under the policy, then every entry settled.
async fn deliver_batch(
    app: App,
    sub: Arc<Subscription>,
    broker: Arc<dyn PubSub>,
    policy: Arc<Policy>,
    batch: Vec<Box<dyn Delivery>>,
    stop: CancellationToken,
) {
    let _in_flight = sub.in_flight(batch.len());
    let heads: Vec<EventHead> = batch.iter().map(|d| EventHead::read(d.data())).collect();
    let hop = span::batch(&sub, &app, heads.first(), batch.len());
    let work = async {
        // `None`: no route takes the entry.
        let mut verdicts: Vec<Option<Decided>> = vec![None; batch.len()];
        let mut routes: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, head) in heads.iter().enumerate() {
            let Some(path) = path_for(&sub, head.kind.as_deref()) else {
                continue;
            };
            verdicts[i] = Some((Verdict::Retry, None));
            match routes.iter_mut().find(|(p, _)| *p == path) {
                Some((_, entries)) => entries.push(i),
                None => routes.push((path, vec![i])),
            }
        }
        for (path, entries) in routes {
            let sent = Sent {
                app: &app,
                sub: &sub,
                path,
                batch: &batch,
                heads: &heads,
            };
            let Some(decided) = sent.run(&policy, entries, &stop).await else {
                return; // shutting down: the broker redelivers
            };
            for (i, verdict) in decided {
                verdicts[i] = Some(verdict);
            }
        }
        for (delivery, verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                Some((verdict, refused)) => {
                    settle::settle(&app, &sub, &broker, &policy, delivery, verdict, refused).await;
                }
                None => settle::unrouted(&app, &sub, &broker, delivery).await,
            }
        }
    };
    hop.wrap(work).await;
    hop.end();
}

/// A verdict and the delay a refusing breaker asked for.
type Decided = (Verdict, Option<Duration>);

/// The entries of one route of a batch.
struct Sent<'a> {
    app: &'a App,
    sub: &'a SubscriptionSpec,
    path: &'a str,
    batch: &'a [Box<dyn Delivery>],
    heads: &'a [EventHead],
}

impl Sent<'_> {
    /// POSTs `entries` under `policy`, each retry with the entries still undecided; every
    /// entry's verdict, or `None` when shutting down.
    async fn run(
        &self,
        policy: &Policy,
        entries: Vec<usize>,
        stop: &CancellationToken,
    ) -> Option<Vec<(usize, Decided)>> {
        let open = Mutex::new(entries.clone());
        let decided = Mutex::new(Vec::with_capacity(entries.len()));
        let run = policy.run(
            |_| {
                let mut app = self.app.clone();
                let (open, decided) = (&open, &decided);
                async move {
                    let addr = app.endpoint(stop).await.ok_or(Stopping)?;
                    let now: Vec<usize> = open.lock().expect("poisoned").clone();
                    let answers = self.post(&app, addr, &now).await;
                    let mut left = Vec::new();
                    for (i, verdict) in now.into_iter().zip(answers) {
                        match verdict {
                            Verdict::Retry => left.push(i),
                            v => decided.lock().expect("poisoned").push((i, (v, None))),
                        }
                    }
                    let done = left.is_empty();
                    *open.lock().expect("poisoned") = left;
                    Ok(if done { Verdict::Ack } else { Verdict::Retry })
                }
            },
            delivery_outcome,
        );
        let result = tokio::select! {
            _ = stop.cancelled() => return None,
            result = run => result,
        };
        let refused = match result {
            Err(RunError::Failed(Stopping)) => return None,
            Err(RunError::BreakerOpen(refused)) => Some(refused.retry_after()),
            _ => None,
        };
        let mut out = decided.into_inner().expect("poisoned");
        let left = open.into_inner().expect("poisoned");
        out.extend(left.into_iter().map(|i| (i, (Verdict::Retry, refused))));
        Some(out)
    }

    /// One POST of `entries`; a verdict per entry, in their order.
    async fn post(&self, app: &App, addr: std::net::SocketAddr, entries: &[usize]) -> Vec<Verdict> {
        let ids: Vec<String> = entries.iter().map(|_| uuid()).collect();
        let body = envelope(
            self.sub,
            entries.iter().zip(&ids).map(|(&i, id)| {
                (
                    id.as_str(),
                    self.batch[i].data().as_ref(),
                    self.heads[i].is_object,
                )
            }),
        );
        let traceparent = entries
            .iter()
            .find_map(|&i| self.heads[i].traceparent.as_deref());
        let all = |v| vec![v; entries.len()];
        let Ok(request) = delivery_request(
            addr,
            self.path,
            &self.sub.pubsub,
            "application/json",
            traceparent,
            body,
        ) else {
            return all(Verdict::Drop);
        };
        match exchange(app, request).await {
            Some((status, body)) => statuses(status, &body, &ids),
            None => all(Verdict::Retry),
        }
    }
}

/// Dapr's bulk envelope around `entries` (entry id, message, whether it is a JSON object).
fn envelope<'a>(
    sub: &SubscriptionSpec,
    entries: impl Iterator<Item = (&'a str, &'a [u8], bool)>,
) -> Bytes {
    let text = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let pubsub = text(&sub.pubsub);
    let mut out = Vec::with_capacity(256);
    let _ = write!(
        Cursor(&mut out),
        r#"{{"id":"{}","type":"com.dapr.event.sent.bulk","topic":{},"pubsubname":{pubsub},"metadata":{{"pubsubName":{pubsub}}},"entries":["#,
        uuid(),
        text(&sub.topic),
    );
    for (n, (id, data, is_object)) in entries.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let _ = write!(Cursor(&mut out), r#"{{"entryId":"{id}","event":"#);
        if is_object {
            out.extend_from_slice(data);
            out.extend_from_slice(br#","contentType":"application/cloudevents+json""#);
        } else {
            out.push(b'"');
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            out.extend_from_slice(br#"","contentType":"application/octet-stream""#);
        }
        out.extend_from_slice(br#","metadata":{}}"#);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// `fmt::Write` into a byte vector.
struct Cursor<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[derive(Deserialize)]
struct BulkAnswer {
    statuses: Vec<EntryStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryStatus {
    entry_id: String,
    #[serde(default)]
    status: String,
}

/// The app's answer to a bulk POST as one verdict per entry of `ids`.
fn statuses(status: http::StatusCode, body: &[u8], ids: &[String]) -> Vec<Verdict> {
    let all = |v| vec![v; ids.len()];
    if status == http::StatusCode::NOT_FOUND {
        return all(Verdict::Drop);
    }
    if !status.is_success() {
        return all(Verdict::Retry);
    }
    let Ok(answer) = serde_json::from_slice::<BulkAnswer>(body) else {
        return all(Verdict::Retry);
    };
    ids.iter()
        .map(|id| {
            answer
                .statuses
                .iter()
                .find(|s| &s.entry_id == id)
                .map_or(Verdict::Retry, |s| {
                    super::status_verdict(&s.status, Verdict::Retry)
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> SubscriptionSpec {
        SubscriptionSpec {
            service: "s".into(),
            pubsub: "pubsub".into(),
            topic: "orders".into(),
            route: "/orders".into(),
            rules: vec![],
            dead_letter_topic: None,
            max_in_flight: 16,
            in_order: false,
            max_deliveries: 3,
            bulk: BulkSubscribe::from_dapr(true, None, None),
        }
    }

    #[test]
    fn the_envelope_is_daprs_with_events_inline_or_base64() {
        let ce = br#"{"id":"1","type":"t","data":{"n":1}}"#;
        let body = envelope(
            &sub(),
            [("a", &ce[..], true), ("b", &b"raw"[..], false)].into_iter(),
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(v["type"], "com.dapr.event.sent.bulk");
        assert_eq!(v["topic"], "orders");
        assert_eq!(v["pubsubname"], "pubsub");
        assert_eq!(v["metadata"]["pubsubName"], "pubsub");
        assert_eq!(v["id"].as_str().map(str::len), Some(36));
        let e = &v["entries"];
        assert_eq!(e[0]["entryId"], "a");
        assert_eq!(e[0]["event"]["data"]["n"], 1);
        assert_eq!(e[0]["contentType"], "application/cloudevents+json");
        assert_eq!(e[1]["event"], "cmF3");
        assert_eq!(e[1]["contentType"], "application/octet-stream");
        assert!(e[1]["metadata"].is_object());
    }

    #[test]
    fn statuses_are_read_per_entry_as_daprd_reads_them() {
        use http::StatusCode as S;
        let ids: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let body = br#"{"statuses":[{"entryId":"a","status":"SUCCESS"},{"entryId":"b","status":"DROP"},
            {"entryId":"c","status":"RETRY"},{"entryId":"d","status":""},{"entryId":"x","status":"SUCCESS"}]}"#;
        use Verdict::*;
        assert_eq!(
            statuses(S::OK, body, &ids),
            vec![Ack, Drop, Retry, Retry, Retry]
        );
        assert_eq!(statuses(S::OK, b"", &ids), vec![Retry; 5]);
        assert_eq!(statuses(S::NOT_FOUND, b"", &ids), vec![Drop; 5]);
        assert_eq!(
            statuses(S::INTERNAL_SERVER_ERROR, body, &ids),
            vec![Retry; 5]
        );
    }
}
