//! Which subscriptions a service has: the declarative ones of herd.toml and Dapr `Subscription`
//! files, plus the programmatic ones the app answers at `GET /dapr/subscribe` (as Dapr asks),
//! once one of its instances is ready (`ListTopicSubscriptions` for a gRPC app). A declarative subscription wins over a programmatic one
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

/// Asks the app for its subscriptions; none when it has none.
///
/// Only an app that could not be reached, timed out or answered 5xx is asked again (a few
/// times, then logged as a warning), so a slow first request does not silently lose its
/// subscriptions. A complete answer is final: a 404 (as daprd reads it) or a body that is not a
/// subscription list (an app that answers every path the same way) means the app has no
/// programmatic subscriptions, said once at info level.
async fn discover(app: &mut App, stop: &CancellationToken) -> Vec<SubscriptionSpec> {
    let mut answer = Vec::new();
    for attempt in 1..=5u32 {
        let Some(addr) = app.endpoint(stop).await else {
            return Vec::new();
        };
        match ask(app, addr).await {
            Ok(Answer::List(found)) => {
                answer = found;
                break;
            }
            Ok(Answer::None(why)) => {
                tracing::info!(
                    "{}: no programmatic subscriptions (GET /dapr/subscribe: {why}); only declarative subscriptions apply",
                    app.service
                );
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
        .filter_map(|p| programmatic(&app.service, p, app.grpc.is_some()))
        .collect()
}

/// `ListTopicSubscriptions` of a gRPC app, in the shape of `GET /dapr/subscribe`'s answer.
async fn ask_grpc(
    channels: &crate::grpc::callback::Channels,
    addr: SocketAddr,
) -> Result<Vec<Programmatic>, String> {
    let found = tokio::time::timeout(DISCOVERY_TIMEOUT, channels.subscriptions(addr))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(found
        .into_iter()
        .map(|s| {
            let routes = s.routes.unwrap_or_default();
            Programmatic {
                pubsubname: s.pubsub_name,
                topic: s.topic,
                route: None,
                routes: Some(Routes {
                    default: Some(routes.default),
                    rules: routes
                        .rules
                        .into_iter()
                        .map(|r| Rule {
                            matches: r.r#match,
                            path: r.path,
                        })
                        .collect(),
                }),
                dead_letter_topic: Some(s.dead_letter_topic),
                // Read so the subscription says what the app asked for; a gRPC app's
                // subscription is delivered one message at a time (see `run_subscription`).
                bulk_subscribe: s.bulk_subscribe.map(|b| Bulk {
                    enabled: b.enabled,
                    max_messages_count: u32::try_from(b.max_messages_count).ok(),
                    max_await_duration_ms: u64::try_from(b.max_await_duration_ms).ok(),
                }),
            }
        })
        .collect())
}

/// One entry of the answer as a subscription. Like daprd, `routes.default` wins over `route`,
/// and a subscription may have rules only: an event matching none of them is not delivered
/// (see `path_for`). An entry with neither is skipped for an HTTP app, as daprd has nowhere to
/// send it; a gRPC app gets its events on the empty path then, as daprd gives it a default
/// route of `""` when it names none.
fn programmatic(service: &str, p: Programmatic, grpc: bool) -> Option<SubscriptionSpec> {
    let routes = p.routes.unwrap_or_default();
    let rules: Vec<(String, String)> = routes
        .rules
        .into_iter()
        .filter_map(|r| match SubscriptionSpec::parse_match(&r.matches) {
            Some(kind) => Some((kind, r.path)),
            None => {
                tracing::warn!(
                    "{service}: subscription to {}/{}: rule {:?} ignored; herd evaluates rules of the form event.type == \"<type>\"",
                    p.pubsubname,
                    p.topic,
                    r.matches
                );
                None
            }
        })
        .collect();
    let route = routes
        .default
        .or(p.route)
        .filter(|r| !r.is_empty())
        .unwrap_or_default();
    if route.is_empty() && rules.is_empty() && !grpc {
        tracing::warn!(
            "{service}: subscription to {}/{} has no route and no rules; skipped",
            p.pubsubname,
            p.topic
        );
        return None;
    }
    Some(SubscriptionSpec {
        service: service.to_string(),
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
}

/// A complete answer to `GET /dapr/subscribe`.
#[derive(Debug)]
enum Answer {
    /// The app's subscriptions (possibly none).
    List(Vec<Programmatic>),
    /// The app has no such route, or answered something that is not a subscription list.
    None(String),
}

/// One `GET /dapr/subscribe`: the app's complete answer, or why there was none (the app could
/// not be reached, timed out or failed with 5xx: worth asking again).
async fn ask(app: &App, addr: SocketAddr) -> Result<Answer, String> {
    if let Some(channels) = &app.grpc {
        return ask_grpc(channels, addr).await.map(Answer::List);
    }
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
        if status.is_server_error() {
            return Err(format!("status {status}"));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(read_answer(status, &body))
    })
    .await
    .map_err(|_| "timed out".to_string())?
}

/// Reads a complete (not 5xx) answer.
fn read_answer(status: http::StatusCode, body: &[u8]) -> Answer {
    if !status.is_success() {
        return Answer::None(format!("status {status}"));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Answer::List(Vec::new());
    }
    match serde_json::from_slice(body) {
        Ok(list) => Answer::List(list),
        Err(e) => Answer::None(format!("the answer is not a subscription list: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(json: &str) -> Vec<SubscriptionSpec> {
        let list: Vec<Programmatic> = serde_json::from_str(json).unwrap();
        list.into_iter()
            .filter_map(|p| programmatic("svc", p, false))
            .collect()
    }

    #[test]
    fn complete_answers_without_subscriptions_are_final() {
        use http::StatusCode as S;
        for (status, body) in [
            (S::NOT_FOUND, &b"Cannot GET /dapr/subscribe"[..]),
            (S::OK, b"{\"hello\":\"world\"}"),
            (S::OK, b"hello from herd"),
            (S::METHOD_NOT_ALLOWED, b""),
        ] {
            assert!(
                matches!(read_answer(status, body), Answer::None(_)),
                "{status} {body:?}"
            );
        }
        assert!(matches!(read_answer(S::OK, b" "), Answer::List(l) if l.is_empty()));
        assert!(matches!(read_answer(S::OK, b"[]"), Answer::List(l) if l.is_empty()));
    }

    #[test]
    fn rules_without_a_default_route_are_kept() {
        let subs = entries(
            r#"[{"pubsubname":"p","topic":"t","routes":{"rules":[
                {"match":"event.type == \"a\"","path":"/a"}]}}]"#,
        );
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].route, "");
        assert_eq!(subs[0].rules, vec![("a".to_string(), "/a".to_string())]);
        let both = entries(
            r#"[{"pubsubname":"p","topic":"t","route":"/old","routes":{"default":"/new"}}]"#,
        );
        assert_eq!(both[0].route, "/new");
        let nothing = entries(r#"[{"pubsubname":"p","topic":"t"}]"#);
        assert!(nothing.is_empty());
        // A gRPC app that names no route gets its events on the empty path, as from daprd.
        let p: Programmatic = serde_json::from_str(r#"{"pubsubname":"p","topic":"t"}"#).unwrap();
        let grpc = programmatic("svc", p, true).expect("kept for a gRPC app");
        assert_eq!((grpc.route.as_str(), grpc.rules.len()), ("", 0));
    }

    #[test]
    fn bulk_subscribe_is_read_with_daprs_defaults() {
        let subs = entries(
            r#"[{"pubsubname":"p","topic":"a","route":"/a","bulkSubscribe":{"enabled":true,"maxMessagesCount":5}},
                {"pubsubname":"p","topic":"b","route":"/b","bulkSubscribe":{"enabled":false,"maxMessagesCount":5}},
                {"pubsubname":"p","topic":"c","routes":{"rules":[{"match":"event.type == \"x\"","path":"/x"}]},
                 "bulkSubscribe":{"enabled":true,"maxAwaitDurationMs":20}}]"#,
        );
        let bulk = subs[0].bulk.expect("enabled");
        assert_eq!(bulk.max_messages, 5);
        assert_eq!(bulk.max_await, Duration::from_millis(1000));
        assert_eq!(subs[1].bulk, None);
        // Rules only and bulk together.
        assert_eq!(subs[2].route, "");
        let bulk = subs[2].bulk.expect("enabled");
        assert_eq!(
            (bulk.max_messages, bulk.max_await),
            (100, Duration::from_millis(20))
        );
    }
}
