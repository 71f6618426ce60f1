//! What herd makes of an app's `GET /dapr/subscribe` answer: an app without programmatic
//! subscriptions is told apart from one that could not be asked, and a subscription with routing
//! rules and no default route is served as daprd serves it.

use std::time::Duration;

use serde_json::json;

use crate::pubsub::{events, publish, subscriber};
use crate::state::Api;
use crate::util::{node_available, wait_for};

/// The hello example answers every path with its greeting: it has no subscriptions, which herd
/// says once at info level, without asking again or warning.
#[test]
fn an_app_that_greets_on_every_path_has_no_subscriptions() {
    let api = Api::start(
        "greeter",
        "[[service]]\nname = \"hello\"\ncommand = [\"{hello}\"]\nport = \"auto\"\n",
    );
    let said = "hello: no programmatic subscriptions (GET /dapr/subscribe: the answer is not a subscription list";
    let stderr = wait_for("the info line", Duration::from_secs(20), || {
        let text = api.herd.stderr();
        text.contains(said).then_some(text)
    });
    let line = stderr.lines().find(|l| l.contains(said)).unwrap();
    assert!(line.contains("INFO"), "{line}");
    assert_eq!(stderr.matches(said).count(), 1, "{stderr}");
    assert!(!stderr.contains("GET /dapr/subscribe failed"), "{stderr}");
}

/// `routes.rules` without `routes.default`: matching events go to their rule's path, the others
/// to the dead-letter topic (daprd's behaviour; without one they are acknowledged).
#[test]
fn rules_without_a_default_route_deliver_matches_and_dead_letter_the_rest() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let events_dir = tempfile::tempdir().unwrap();
    let dir = events_dir.path();
    let programmatic = json!([
        {
            "pubsubname": "pubsub",
            "topic": "tickets",
            "deadLetterTopic": "tickets-dead",
            "routes": {"rules": [{"match": "event.type == \"ticket.opened\"", "path": "/opened"}]}
        },
        {"pubsubname": "pubsub", "topic": "tickets-dead", "route": "/dead"}
    ]);
    let api = Api::start("desk", &subscriber("support", 1, dir, &programmatic));
    for (n, kind) in [
        (1, "ticket.opened"),
        (2, "ticket.closed"),
        (3, "ticket.opened"),
    ] {
        let ce = json!({"specversion": "1.0", "id": format!("t-{n}"), "source": "test", "type": kind, "data": {"n": n}});
        publish(&api, "tickets", &ce, "application/cloudevents+json");
    }
    let got = wait_for("three deliveries", Duration::from_secs(30), || {
        let evs = events(dir, "support");
        (evs.len() >= 3).then_some(evs)
    });
    let mut seen: Vec<(u64, String)> = got
        .iter()
        .map(|e| {
            (
                e["data"]["n"].as_u64().unwrap(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (1, "/opened".to_string()),
            (2, "/dead".to_string()),
            (3, "/opened".to_string())
        ],
        "{got:?}"
    );
}
