//! Which subscriptions a service has: the declarative ones of herd.toml and Dapr `Subscription`
//! files, plus the programmatic ones the app answers at `GET /dapr/subscribe` (as Dapr asks),
//! once one of its instances is ready. A declarative subscription wins over a programmatic one
//! for the same pub/sub and topic.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use herd_config::SubscriptionSpec;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::App;

/// How long `GET /dapr/subscribe` may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The service's subscriptions: `declared` first, then those the app names that are not
/// declared already (same pub/sub and topic).
pub(super) async fn subscriptions(
    app: &mut App,
    declared: Vec<SubscriptionSpec>,
    stop: &CancellationToken,
) -> Vec<SubscriptionSpec> {
    let mut subscriptions = declared;
    for found in discover(app, stop).await {
        let duplicate = subscriptions
            .iter()
            .any(|s| s.pubsub == found.pubsub && s.topic == found.topic);
        if !duplicate {
            subscriptions.push(found);
        }
    }
    subscriptions
}

/// One entry of the app's `GET /dapr/subscribe` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Programmatic {
    pubsubname: String,
    topic: String,
    route: Option<String>,
    routes: Option<Routes>,
    dead_letter_topic: Option<String>,
    bulk_subscribe: Option<Bulk>,
}

/// A programmatic subscription's `bulkSubscribe`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bulk {
    #[serde(default)]
    enabled: bool,
    max_messages_count: Option<u32>,
    max_await_duration_ms: Option<u64>,
}

/// A programmatic subscription's `routes`.
#[derive(Debug, Default, Deserialize)]
struct Routes {
    default: Option<String>,
    #[serde(default)]
    rules: Vec<Rule>,
}

/// One routing rule of `routes`.
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
                bulk: p.bulk_subscribe.and_then(|b| {
                    herd_config::BulkSubscribe::from_dapr(
                        b.enabled,
                        b.max_messages_count,
                        b.max_await_duration_ms,
                    )
                }),
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
