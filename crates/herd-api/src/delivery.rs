//! Delivery of messages to apps: subscriptions found, consumers run, answers interpreted.
//!
//! For every service, once one of its instances is ready, herd asks it for its programmatic
//! subscriptions (`GET /dapr/subscribe`, as Dapr does) and adds the declarative ones of
//! herd.toml and Dapr `Subscription` files (`delivery/discovery.rs`). Each subscription consumes
//! its topic as the consumer group named after the service, so the service's instances share
//! the messages and every subscribing service gets all of them. This module runs the consumers
//! and settles each message by the app's verdict; `delivery/post.rs` is the POST itself,
//! `delivery/span.rs` the CONSUMER span each delivery runs in, `delivery/settle.rs` the
//! acknowledgement, retry or dead letter that follows a verdict and the delivery metrics.
//!
//! For an app with `app_protocol = "grpc"` the same happens over Dapr's `AppCallback` service
//! (`grpc/callback.rs`): `ListTopicSubscriptions` instead of `GET /dapr/subscribe`, and
//! `OnTopicEvent` instead of the POST, its `SUCCESS`, `RETRY` and `DROP` read as below (an
//! error status is a retry).
//!
//! A delivery is the CloudEvent POSTed to the route (the first rule whose `event.type` matches,
//! else the default; with rules only and no match, the message is not delivered but
//! dead-lettered or acknowledged, as daprd does) on one of the service's ready endpoints, round
//! robin, with the headers
//! Dapr sets (`traceparent`, and `pubsubname` naming the component, which the SDKs hand their
//! handlers). The answer decides: 2xx with no body or `{"status":"SUCCESS"}` acknowledges;
//! `{"status":"DROP"}` or a 404 drops (to the dead-letter topic when one is set);
//! `{"status":"RETRY"}`, any other status, a timeout or no ready instance retries with
//! exponential backoff and full jitter. A message delivered
//! `max_deliveries` times goes to the dead-letter topic (or is dropped, logged, without one).
//! The broker's own redelivery covers a crash of herd or of the instance mid-delivery.
//!
//! Each delivery runs under the pub/sub component's inbound resiliency policy
//! (`Policies::component_inbound`, for the subscribing app): its timeout bounds every POST, its
//! retries happen here, with its backoff, each POST going to the next ready instance, and its
//! breaker stops deliveries to an app that keeps failing (a refused message goes back to the
//! broker, due when the breaker lets a trial through). Once a policy's retries are used up the
//! message goes to the dead-letter topic at once, or without one back to the broker as above.
//! Without a policy a delivery is one POST, and the broker's redelivery is the retry.
//!
//! A subscription with Dapr's `bulkSubscribe` gets its messages in batches instead
//! (`delivery/bulk.rs`): one POST of Dapr's bulk envelope, one status per entry, each entry then
//! settled as above (`delivery/settle.rs`). An entry no rule matches, with no default route, is
//! dead-lettered or acknowledged without being sent, as above. daprd sends a gRPC app its
//! batches over `OnBulkTopicEventAlpha1`, which herd does not call: a bulk subscription of a
//! gRPC app is delivered one `OnTopicEvent` per message (said once in the log).
//!
//! Back-pressure: the consumer hands out at most `max_in_flight` deliveries that are not yet
//! settled (for a bulk subscription at least one batch), so an app that stops answering holds
//! that many messages in herd and no more; the rest wait in the broker, and the service's other
//! subscriptions go on.

mod bulk;
mod discovery;
mod event;
mod post;
mod settle;
mod span;
mod subscription;

pub(crate) use span::span_name;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use herd_config::{AppProtocol, SubscriptionSpec};
use herd_pubsub::{ConsumeOptions, Delivery, PubSub};
use herd_resilience::{Outcome, Policies, Policy, RunError};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::components::{Block, Components};
use subscription::Subscription;

/// The ready endpoints of a service, as the supervisor publishes them.
pub type Endpoints = watch::Receiver<Arc<Vec<SocketAddr>>>;

/// Looks a service's endpoints up by name.
pub type Apps = Arc<dyn Fn(&str) -> Option<Endpoints> + Send + Sync>;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long an app may take to answer a delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts delivery for every service in `services`: declarative subscriptions from `declared`,
/// programmatic ones asked from the service once an instance is ready.
pub fn start(
    components: Arc<Components>,
    policies: Arc<Policies>,
    declared: Vec<SubscriptionSpec>,
    services: Vec<(String, AppProtocol)>,
    apps: Apps,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let channels = Arc::new(crate::grpc::callback::Channels::default());
    for (service, protocol) in services {
        let Some(endpoints) = apps(&service) else {
            continue;
        };
        let mine: Vec<SubscriptionSpec> = declared
            .iter()
            .filter(|s| s.service == service)
            .cloned()
            .collect();
        let app = App {
            service,
            endpoints,
            client: client.clone(),
            turn: Arc::new(AtomicUsize::new(0)),
            policies: policies.clone(),
            grpc: (protocol == AppProtocol::Grpc).then(|| channels.clone()),
        };
        tracker.spawn(run_app(
            app,
            mine,
            components.clone(),
            stop.clone(),
            tracker.clone(),
        ));
    }
}

/// One subscribing service.
#[derive(Clone)]
struct App {
    service: String,
    endpoints: Endpoints,
    client: HttpClient,
    turn: Arc<AtomicUsize>,
    policies: Arc<Policies>,
    /// Set for `app_protocol = "grpc"`: deliveries go over `AppCallback`.
    grpc: Option<Arc<crate::grpc::callback::Channels>>,
}

impl App {
    /// Waits until the service has a ready endpoint, then picks the next one round robin.
    async fn endpoint(&mut self, stop: &CancellationToken) -> Option<SocketAddr> {
        loop {
            {
                let list = self.endpoints.borrow_and_update();
                if !list.is_empty() {
                    let i = self.turn.fetch_add(1, Ordering::Relaxed);
                    return Some(list[i % list.len()]);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                changed = self.endpoints.changed() => changed.ok()?,
            }
        }
    }
}

/// Finds the service's subscriptions, then runs each.
async fn run_app(
    mut app: App,
    declared: Vec<SubscriptionSpec>,
    components: Arc<Components>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let subscriptions = discovery::subscriptions(&mut app, declared, &stop).await;
    for sub in subscriptions {
        tracing::info!(
            "{}: subscribed to {}/{} at {}",
            app.service,
            sub.pubsub,
            sub.topic,
            sub.route
        );
        tracker.spawn(run_subscription(
            app.clone(),
            sub,
            components.clone(),
            stop.clone(),
            tracker.clone(),
        ));
    }
}

/// Waits for the subscription's broker, then consumes until `stop`.
async fn run_subscription(
    app: App,
    mut sub: SubscriptionSpec,
    components: Arc<Components>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    if app.grpc.is_some() && sub.bulk.take().is_some() {
        tracing::warn!(
            "{}: subscription to {}/{}: bulk subscribe is not offered to gRPC apps (no OnBulkTopicEventAlpha1); each message is delivered with OnTopicEvent",
            app.service,
            sub.pubsub,
            sub.topic
        );
    }
    let broker = loop {
        let component = components
            .find(&sub.pubsub, &app.service)
            .filter(|c| c.block == Block::PubSub);
        match component.map(|c| c.broker()) {
            Some(Ok(b)) => break b.clone(),
            None => {
                tracing::error!(
                    "{}: subscription to {}/{}: no pub/sub component named {:?}",
                    app.service,
                    sub.pubsub,
                    sub.topic,
                    sub.pubsub
                );
                return;
            }
            Some(Err(_)) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    let options = ConsumeOptions {
        // A bulk subscription needs room for a whole batch.
        max_in_flight: sub
            .max_in_flight
            .max(sub.bulk.map_or(0, |b| b.max_messages)),
        ack_timeout: DELIVERY_TIMEOUT + Duration::from_secs(5),
    };
    let mut consumer = loop {
        match broker.consume(&sub.topic, &app.service, options).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!("{}: cannot consume {}: {e}", app.service, sub.topic);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    components.subscribed(crate::components::Active {
        app: app.service.clone(),
        pubsub: sub.pubsub.clone(),
        topic: sub.topic.clone(),
        route: sub.route.clone(),
        rules: sub.rules.clone(),
        dead_letter_topic: sub.dead_letter_topic.clone(),
    });
    let policy = app.policies.component_inbound(&app.service, &sub.pubsub);
    // Listed (with nothing in flight) before its first delivery.
    let sub = Arc::new(Subscription::new(sub, &app.service));
    // A bulk subscription's deliveries go to its batcher, which spawns one task per batch.
    let batches = sub.bulk.map(|settings| {
        let (tx, rx) = tokio::sync::mpsc::channel(settings.max_messages as usize);
        tracker.spawn(bulk::batcher(
            bulk::Batching {
                app: app.clone(),
                sub: sub.clone(),
                broker: broker.clone(),
                policy: policy.clone(),
                settings,
                stop: stop.clone(),
                tracker: tracker.clone(),
            },
            rx,
        ));
        tx
    });
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = consumer.next() => next,
        };
        match next {
            None => return,
            Some(Err(e)) => {
                tracing::warn!("{}: consuming {} failed: {e}", app.service, sub.topic);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Some(Ok(delivery)) if batches.is_some() => {
                let batches = batches.as_ref().expect("a bulk subscription");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    sent = batches.send(delivery) => if sent.is_err() { return },
                }
            }
            Some(Ok(delivery)) => {
                // The consumer bounds deliveries in flight (max_in_flight), so this spawns at
                // most that many tasks at once.
                tracker.spawn(span::traced(
                    app.clone(),
                    sub.clone(),
                    broker.clone(),
                    policy.clone(),
                    delivery,
                    stop.clone(),
                ));
            }
        }
    }
}

/// What an app's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ack,
    Retry,
    Drop,
}

#[derive(Deserialize)]
struct AppStatus<'a> {
    /// Borrowed from the answer unless it holds escapes.
    #[serde(borrow)]
    status: Option<std::borrow::Cow<'a, str>>,
}

/// Dapr's reading of an app's answer.
fn verdict(status: http::StatusCode, body: &[u8]) -> Verdict {
    if status == http::StatusCode::NOT_FOUND {
        return Verdict::Drop;
    }
    if !status.is_success() {
        return Verdict::Retry;
    }
    match serde_json::from_slice::<AppStatus>(body)
        .ok()
        .and_then(|s| s.status)
    {
        None => Verdict::Ack,
        Some(s) => status_verdict(&s, Verdict::Ack),
    }
}

/// An answer's `status`: SUCCESS acknowledges, DROP drops, RETRY retries; `empty` for `""`.
fn status_verdict(status: &str, empty: Verdict) -> Verdict {
    if status.eq_ignore_ascii_case("SUCCESS") {
        Verdict::Ack
    } else if status.is_empty() {
        empty
    } else if status.eq_ignore_ascii_case("DROP") {
        Verdict::Drop
    } else {
        Verdict::Retry
    }
}

/// The path for an event of type `kind`: the first rule matching it, else the default route;
/// `None` when it matches no rule and the subscription has no default route (rules only). A
/// subscription with neither rules nor a route (only a gRPC app's) takes every event on `""`.
fn path_for<'a>(sub: &'a SubscriptionSpec, kind: Option<&str>) -> Option<&'a str> {
    sub.rules
        .iter()
        .find(|(t, _)| Some(t.as_str()) == kind)
        .map(|(_, p)| p.as_str())
        .or_else(|| (!sub.route.is_empty() || sub.rules.is_empty()).then_some(sub.route.as_str()))
}

/// Shutting down: the message is left to the broker's redelivery.
struct Stopping;

/// How an app's answer counts for the inbound policy.
fn delivery_outcome(result: &Result<Verdict, Stopping>) -> Outcome {
    match result {
        Ok(Verdict::Ack) => Outcome::Success,
        Ok(Verdict::Retry) => Outcome::Failure,
        Ok(Verdict::Drop) | Err(Stopping) => Outcome::Permanent,
    }
}

/// POSTs the message to `path` under `policy` (each attempt to the next ready instance), or
/// calls `OnTopicEvent` for a gRPC app; the app's last verdict, and the delay the breaker asks
/// for when it refused. `None` when shutting down.
async fn attempt(
    app: &App,
    sub: &SubscriptionSpec,
    policy: &Policy,
    (path, head): (&str, &event::EventHead),
    body: &Bytes,
    stop: &CancellationToken,
) -> Option<(Verdict, Option<Duration>)> {
    // OnTopicEvent carries the event's data and attributes in fields: the whole event is read,
    // once for all attempts. An HTTP app gets the bytes as they are.
    let event: Option<serde_json::Value> = app
        .grpc
        .is_some()
        .then(|| serde_json::from_slice(body).unwrap_or_default());
    let run = policy.run(
        |_| {
            let mut app = app.clone();
            let body = body.clone();
            let event = event.as_ref();
            async move {
                let addr = app.endpoint(stop).await.ok_or(Stopping)?;
                let traceparent = head.traceparent.as_deref();
                Ok(match (&app.grpc, event) {
                    (Some(channels), Some(event)) => {
                        let call = post::Call {
                            event,
                            body: &body,
                            traceparent,
                        };
                        post::over_grpc(channels, addr, path, sub, call).await
                    }
                    _ => post::post(&app, addr, path, &sub.pubsub, traceparent, body).await,
                })
            }
        },
        delivery_outcome,
    );
    let result = tokio::select! {
        _ = stop.cancelled() => return None,
        result = run => result,
    };
    match result {
        Ok(verdict) => Some((verdict, None)),
        Err(RunError::Failed(Stopping)) => None,
        Err(RunError::TimedOut(_)) => Some((Verdict::Retry, None)),
        Err(RunError::BreakerOpen(refused)) => Some((Verdict::Retry, Some(refused.retry_after()))),
    }
}

/// One message: POSTed under the policy, then settled by the app's verdict.
async fn deliver(
    app: App,
    sub: Arc<Subscription>,
    broker: Arc<dyn PubSub>,
    policy: Arc<Policy>,
    delivery: Box<dyn Delivery>,
    head: event::EventHead,
    stop: CancellationToken,
) {
    let _in_flight = sub.in_flight(1);
    let Some(path) = path_for(&sub, head.kind.as_deref()) else {
        // As daprd: an event no rule matches, without a default route, is not delivered.
        settle::unrouted(&app, &sub, &broker, delivery).await;
        return;
    };
    let body = delivery.data().clone();
    let Some((verdict, refused)) = attempt(&app, &sub, &policy, (path, &head), &body, &stop).await
    else {
        return; // shutting down: the broker redelivers
    };
    settle::settle(&app, &sub, &broker, &policy, delivery, verdict, refused).await;
}

#[cfg(test)]
mod tests;
