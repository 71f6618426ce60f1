//! Delivery of messages to apps: subscriptions found, consumers run, answers interpreted.
//!
//! For every service, once one of its instances is ready, herd asks it for its programmatic
//! subscriptions (`GET /dapr/subscribe`, as Dapr does) and adds the declarative ones of
//! herd.toml and Dapr `Subscription` files. Each subscription consumes its topic as the consumer
//! group named after the service, so the service's instances share the messages and every
//! subscribing service gets all of them.
//!
//! A delivery is the CloudEvent POSTed to the route (the first rule whose `event.type` matches,
//! else the default) on one of the service's ready endpoints, round robin, with the headers
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use herd_config::SubscriptionSpec;
use herd_pubsub::{ConsumeOptions, Delivery, Message, Nack, PubSub};
use herd_resilience::{Outcome, Policies, Policy, RunError};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use herd_telemetry::traceparent::TRACEPARENT;
use herd_telemetry::{Traced, context};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::components::{Block, Components};

/// The ready endpoints of a service, as the supervisor publishes them.
pub type Endpoints = watch::Receiver<Arc<Vec<SocketAddr>>>;

/// Looks a service's endpoints up by name.
pub type Apps = Arc<dyn Fn(&str) -> Option<Endpoints> + Send + Sync>;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long an app may take to answer a delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `GET /dapr/subscribe` may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts delivery for every service in `services`: declarative subscriptions from `declared`,
/// programmatic ones asked from the service once an instance is ready.
pub fn start(
    components: Arc<Components>,
    policies: Arc<Policies>,
    declared: Vec<SubscriptionSpec>,
    services: Vec<String>,
    apps: Apps,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    for service in services {
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Programmatic {
    pubsubname: String,
    topic: String,
    route: Option<String>,
    routes: Option<Routes>,
    dead_letter_topic: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Routes {
    default: Option<String>,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    #[serde(rename = "match")]
    matches: String,
    path: String,
}

/// Asks the app for its subscriptions; none when it has no such route.
async fn discover(app: &mut App, stop: &CancellationToken) -> Vec<SubscriptionSpec> {
    // An app without programmatic subscriptions answers 404 (or 200 with []); a failed or
    // unreadable answer is tried again a few times, then logged, so a slow first request does
    // not silently lose the app's subscriptions.
    let mut answer = Vec::new();
    for attempt in 1..=5u32 {
        let Some(addr) = app.endpoint(stop).await else {
            return Vec::new();
        };
        match ask(app, addr).await {
            Ok(found) => {
                answer = found;
                break;
            }
            Err(why) if attempt == 5 => {
                tracing::warn!(
                    "{}: GET /dapr/subscribe failed {attempt} times ({why}); only declarative subscriptions apply",
                    app.service
                );
            }
            Err(_) => {
                tokio::select! {
                    _ = stop.cancelled() => return Vec::new(),
                    _ = tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))) => {}
                }
            }
        }
    }
    answer
        .into_iter()
        .filter_map(|p| {
            let routes = p.routes.unwrap_or_default();
            let route = routes.default.or(p.route)?;
            let rules = routes
                .rules
                .into_iter()
                .filter_map(|r| Some((SubscriptionSpec::parse_match(&r.matches)?, r.path)))
                .collect();
            Some(SubscriptionSpec {
                service: app.service.clone(),
                pubsub: p.pubsubname,
                topic: p.topic,
                route,
                rules,
                dead_letter_topic: p.dead_letter_topic.filter(|t| !t.is_empty()),
                max_in_flight: 16,
                in_order: false,
                max_deliveries: 10,
            })
        })
        .collect()
}

/// One `GET /dapr/subscribe`: the app's subscriptions, none on 404, or why it failed.
async fn ask(app: &App, addr: SocketAddr) -> Result<Vec<Programmatic>, String> {
    let request = http::Request::get(format!("http://{addr}/dapr/subscribe"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(DISCOVERY_TIMEOUT, async {
        let response = app
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status == http::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&body).map_err(|e| format!("unreadable answer: {e}"))
    })
    .await
    .map_err(|_| "timed out".to_string())?
}

async fn run_app(
    mut app: App,
    declared: Vec<SubscriptionSpec>,
    components: Arc<Components>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut subscriptions = declared;
    for found in discover(&mut app, &stop).await {
        let duplicate = subscriptions
            .iter()
            .any(|s| s.pubsub == found.pubsub && s.topic == found.topic);
        if !duplicate {
            subscriptions.push(found);
        }
    }
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
    sub: SubscriptionSpec,
    components: Arc<Components>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
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
        max_in_flight: sub.max_in_flight,
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
    InFlight::gauge(&sub, &app.service).set(0.0);
    let sub = Arc::new(sub);
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
            Some(Ok(delivery)) => {
                // The consumer bounds deliveries in flight (max_in_flight), so this spawns at
                // most that many tasks at once.
                tracker.spawn(traced(
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
struct AppStatus {
    status: Option<String>,
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
        Some(s) => match s.to_ascii_uppercase().as_str() {
            "SUCCESS" | "" => Verdict::Ack,
            "DROP" => Verdict::Drop,
            _ => Verdict::Retry,
        },
    }
}

/// The path for an event: the first rule matching its type, else the default route.
fn path_for<'a>(sub: &'a SubscriptionSpec, event: &serde_json::Value) -> &'a str {
    let kind = event.get("type").and_then(|t| t.as_str());
    sub.rules
        .iter()
        .find(|(t, _)| Some(t.as_str()) == kind)
        .map_or(sub.route.as_str(), |(_, p)| p.as_str())
}

/// Backoff before redelivery `attempt + 1`: exponential from 100 ms, capped at 10 s, full
/// jitter.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(100)
        .saturating_mul(1 << attempt.saturating_sub(1).min(7))
        .min(Duration::from_secs(10));
    cap.mul_f64(fastrand::f64())
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

/// POSTs the message under `policy` (each attempt to the next ready instance); the app's last
/// verdict, and the delay the breaker asks for when it refused. `None` when shutting down.
async fn attempt(
    app: &App,
    sub: &SubscriptionSpec,
    policy: &Policy,
    event: &serde_json::Value,
    body: &Bytes,
    stop: &CancellationToken,
) -> Option<(Verdict, Option<Duration>)> {
    let path = path_for(sub, event);
    let run = policy.run(
        |_| {
            let mut app = app.clone();
            let body = body.clone();
            async move {
                let addr = app.endpoint(stop).await.ok_or(Stopping)?;
                Ok(post(&app, addr, path, &sub.pubsub, event, body).await)
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

async fn deliver(
    app: App,
    sub: Arc<SubscriptionSpec>,
    broker: Arc<dyn PubSub>,
    policy: Arc<Policy>,
    delivery: Box<dyn Delivery>,
    stop: CancellationToken,
) {
    let _in_flight = InFlight::start(&sub, &app.service);
    let event: serde_json::Value = serde_json::from_slice(delivery.data()).unwrap_or_default();
    let body = delivery.data().clone();
    let Some((verdict, refused)) = attempt(&app, &sub, &policy, &event, &body, &stop).await else {
        return; // shutting down: the broker redelivers
    };
    // The policy's retries were used up (not refused by its breaker): dead-letter now when the
    // subscription has a topic for it.
    let exhausted = refused.is_none() && policy.retry().is_some();
    let outcome = match verdict {
        Verdict::Ack => delivery.ack().await.map(|()| "success"),
        Verdict::Retry if exhausted && sub.dead_letter_topic.is_some() => {
            dead_letter(&app, &sub, &broker, delivery, verdict).await
        }
        Verdict::Retry if delivery.attempt() < sub.max_deliveries => {
            let delay = refused.unwrap_or_else(|| backoff(delivery.attempt()));
            delivery.nack(Nack::Retry(delay)).await.map(|()| "retry")
        }
        Verdict::Retry | Verdict::Drop => dead_letter(&app, &sub, &broker, delivery, verdict).await,
    };
    let outcome = outcome.unwrap_or_else(|e| {
        tracing::warn!("{}: settling a message of {}: {e}", app.service, sub.topic);
        "error"
    });
    metrics::counter!(
        "herd_pubsub_deliveries_total",
        "pubsub" => sub.pubsub.clone(),
        "topic" => sub.topic.clone(),
        "app" => app.service.clone(),
        "outcome" => outcome
    )
    .increment(1);
}

/// A delivery counted in `herd_pubsub_in_flight` from its start until it is dropped, however
/// it ends.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn gauge(sub: &SubscriptionSpec, app: &str) -> metrics::Gauge {
        metrics::gauge!(
            "herd_pubsub_in_flight",
            "pubsub" => sub.pubsub.clone(),
            "topic" => sub.topic.clone(),
            "app" => app.to_string()
        )
    }

    fn start(sub: &SubscriptionSpec, app: &str) -> Self {
        let gauge = Self::gauge(sub, app);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The trace context a CloudEvent carries.
#[derive(Deserialize, Default)]
struct EventTrace {
    id: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// One delivery attempt inside its CONSUMER span, a child of the event's `traceparent`: log
/// lines carry the trace id, and the POST to the app names this span as its parent.
async fn traced(
    app: App,
    sub: Arc<SubscriptionSpec>,
    broker: Arc<dyn PubSub>,
    policy: Arc<Policy>,
    delivery: Box<dyn Delivery>,
    stop: CancellationToken,
) {
    let event: EventTrace = serde_json::from_slice(delivery.data()).unwrap_or_default();
    let parent = event
        .traceparent
        .as_deref()
        .and_then(|tp| context::parse(tp, event.tracestate.as_deref()));
    let hop = Traced::start(
        SpanKind::Consumer,
        format!("process {}", sub.topic),
        &context::remote(parent),
        || {
            let mut a = vec![
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", sub.topic.clone()),
                KeyValue::new("messaging.consumer.group.name", app.service.clone()),
                KeyValue::new("herd.pubsub", sub.pubsub.clone()),
                KeyValue::new("herd.delivery.attempt", i64::from(delivery.attempt())),
            ];
            if let Some(id) = event.id.clone() {
                a.push(KeyValue::new("messaging.message.id", id));
            }
            a
        },
    );
    hop.wrap(deliver(app, sub, broker, policy, delivery, stop))
        .await;
    hop.end();
}

/// The delivery request for `event` (serialised as `body`), with Dapr's headers.
fn delivery_request(
    addr: SocketAddr,
    path: &str,
    pubsub: &str,
    event: &serde_json::Value,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, "application/cloudevents+json")
        .header("pubsubname", pubsub);
    // Inside a delivery's span, that span is the app's parent; else the event's context.
    let current = herd_telemetry::current_traceparent();
    if let Some(tp) = current
        .as_deref()
        .or_else(|| event.get("traceparent").and_then(|t| t.as_str()))
    {
        request = request.header(TRACEPARENT, tp);
    }
    request.body(Full::new(body))
}

/// POSTs the event; any transport failure or timeout is a retry.
async fn post(
    app: &App,
    addr: SocketAddr,
    path: &str,
    pubsub: &str,
    event: &serde_json::Value,
    body: Bytes,
) -> Verdict {
    let Ok(request) = delivery_request(addr, path, pubsub, event, body) else {
        return Verdict::Drop;
    };
    let answer = tokio::time::timeout(DELIVERY_TIMEOUT, async {
        let response = app.client.request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some(verdict(status, &body))
    })
    .await;
    match answer {
        Ok(Some(v)) => v,
        _ => Verdict::Retry,
    }
}

/// Moves a message the app dropped or kept failing to the dead-letter topic (or drops it).
async fn dead_letter(
    app: &App,
    sub: &SubscriptionSpec,
    broker: &Arc<dyn PubSub>,
    delivery: Box<dyn Delivery>,
    verdict: Verdict,
) -> Result<&'static str, herd_pubsub::PubSubError> {
    let why = match verdict {
        Verdict::Drop => "dropped by the app",
        _ => "failed too often",
    };
    match &sub.dead_letter_topic {
        Some(topic) => {
            let message = Message {
                data: delivery.data().clone(),
                id: None,
                ttl: None,
                metadata: Default::default(),
            };
            // Publish first: if herd dies in between, the message is redelivered, not lost.
            broker.publish(topic, message).await?;
            delivery.ack().await?;
            Ok("dead_lettered")
        }
        None => {
            tracing::warn!(
                "{}: message on {}/{} {why} after {} attempt(s); no dead-letter topic, dropped",
                app.service,
                sub.pubsub,
                sub.topic,
                delivery.attempt()
            );
            delivery.ack().await?;
            Ok("dropped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_dapr_reads_them() {
        use http::StatusCode as S;
        assert_eq!(verdict(S::OK, b""), Verdict::Ack);
        assert_eq!(verdict(S::NO_CONTENT, b""), Verdict::Ack);
        assert_eq!(verdict(S::OK, br#"{"status":"SUCCESS"}"#), Verdict::Ack);
        assert_eq!(verdict(S::OK, br#"{"status":"RETRY"}"#), Verdict::Retry);
        assert_eq!(verdict(S::OK, br#"{"status":"DROP"}"#), Verdict::Drop);
        assert_eq!(verdict(S::NOT_FOUND, b""), Verdict::Drop);
        assert_eq!(verdict(S::INTERNAL_SERVER_ERROR, b""), Verdict::Retry);
        assert_eq!(verdict(S::OK, b"not json"), Verdict::Ack);
    }

    #[test]
    fn rules_pick_the_path_by_event_type() {
        let sub = SubscriptionSpec {
            service: "s".into(),
            pubsub: "p".into(),
            topic: "t".into(),
            route: "/default".into(),
            rules: vec![("order.created".into(), "/created".into())],
            dead_letter_topic: None,
            max_in_flight: 1,
            in_order: true,
            max_deliveries: 3,
        };
        let created = serde_json::json!({"type": "order.created"});
        let other = serde_json::json!({"type": "order.paid"});
        assert_eq!(path_for(&sub, &created), "/created");
        assert_eq!(path_for(&sub, &other), "/default");
    }

    #[test]
    fn deliveries_carry_dapr_headers() {
        let event = serde_json::json!({
            "id": "1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        });
        let addr: SocketAddr = ([127, 0, 0, 1], 8080).into();
        let body = Bytes::from(event.to_string());
        let r = delivery_request(addr, "/orders", "pubsub", &event, body).unwrap();
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.uri(), "http://127.0.0.1:8080/orders");
        let h = r.headers();
        assert_eq!(h["content-type"], "application/cloudevents+json");
        assert_eq!(h["pubsubname"], "pubsub");
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        let bare = serde_json::json!({"id": "2"});
        let r = delivery_request(addr, "/", "other", &bare, Bytes::new()).unwrap();
        assert!(r.headers().get("traceparent").is_none());
        assert_eq!(r.headers()["pubsubname"], "other");
    }

    #[test]
    fn answers_count_for_the_inbound_policy() {
        assert_eq!(delivery_outcome(&Ok(Verdict::Ack)), Outcome::Success);
        assert_eq!(delivery_outcome(&Ok(Verdict::Retry)), Outcome::Failure);
        assert_eq!(delivery_outcome(&Ok(Verdict::Drop)), Outcome::Permanent);
        assert_eq!(delivery_outcome(&Err(Stopping)), Outcome::Permanent);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            let cap = Duration::from_millis(100 * (1 << (attempt - 1).min(7)))
                .min(Duration::from_secs(10));
            assert!(backoff(attempt) <= cap);
        }
    }
}
