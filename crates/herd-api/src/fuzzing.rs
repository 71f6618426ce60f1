//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: the sidecar API
//! driven with arbitrary requests, in process, over the real router and embedded stores.
//! Not part of the API.
//!
//! [`request`] reads its input as `route byte, content-type byte, segment \n query \n body`:
//! the route picks one of the state, lock, publish and metadata endpoints, the segment (a key
//! or topic) is percent-encoded into the path, the query is used as it is (inputs that do not
//! make a valid URI are skipped). What must hold: no panic, no 5xx for anything a client sent
//! (a bulk publish answers 500 when entries failed, as Dapr does, and lists them), and every
//! error is Dapr's JSON `{errorCode, message}`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::components::{Backend, Declared};
use crate::{AppId, Components, Invoker, KeyPrefix, Policies, Shared};

/// The app id requests are made for.
const APP: &str = "fuzz";
/// Body limit of the router under test; inputs stay below it.
const MAX_BODY: usize = 1 << 20;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: crate::listener::Api,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = std::env::temp_dir().join(format!("herd-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let declared = vec![
            Declared {
                name: "store".into(),
                kind: "state.embedded".into(),
                scopes: Vec::new(),
                prefix: KeyPrefix::from_metadata(None, "store"),
                backend: Backend::State(herd_state::Backend::Embedded(dir.join("state.redb"))),
                outbox: None,
            },
            Declared {
                name: "bus".into(),
                kind: "pubsub.embedded".into(),
                scopes: Vec::new(),
                prefix: KeyPrefix::from_metadata(None, "bus"),
                backend: Backend::PubSub(herd_pubsub::Backend::Embedded(
                    dir.join("log.redb"),
                    Default::default(),
                )),
                outbox: None,
            },
        ];
        let router = runtime.block_on(async {
            let stop = CancellationToken::new();
            let components = Components::start(declared, &stop, &TaskTracker::new());
            assert!(components.wait_ready(Duration::from_secs(30)).await);
            let policies = Policies::new(
                Vec::new(),
                [
                    ("store".to_string(), "state.embedded".to_string()),
                    ("bus".to_string(), "pubsub.embedded".to_string()),
                ],
            );
            let shared = Arc::new(Shared {
                components,
                token: None,
                shared_app: APP.into(),
                outbox_ready: Default::default(),
                policies: Arc::new(policies),
                invoker: Arc::new(Invoker::new(vec![APP.into()], None, MAX_BODY)),
                extended: Default::default(),
            });
            crate::listener::Api::new(
                crate::router(shared.clone()),
                shared,
                AppId(APP.into()),
                MAX_BODY,
            )
        });
        Harness { runtime, router }
    })
}

/// `(method, path before the segment, path after it)` of each route.
const ROUTES: &[(Method, &str, &str)] = &[
    (Method::POST, "/v1.0/state/store", ""),
    (Method::POST, "/v1.0/state/store/bulk", ""),
    (Method::POST, "/v1.0/state/store/transaction", ""),
    (Method::GET, "/v1.0/state/store/", ""),
    (Method::DELETE, "/v1.0/state/store/", ""),
    (Method::POST, "/v1.0/publish/bus/", ""),
    (Method::POST, "/v1.0-alpha1/publish/bulk/bus/", ""),
    (Method::POST, "/v1.0-alpha1/lock/store", ""),
    (Method::POST, "/v1.0-alpha1/unlock/store", ""),
    (Method::GET, "/v1.0/metadata", ""),
];

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/cloudevents+json"),
    Some("text/plain"),
    Some("application/octet-stream"),
    None,
];

/// Percent-encodes every byte that is not unreserved.
fn encode(segment: &[u8]) -> String {
    let mut out = String::with_capacity(segment.len() * 3);
    for &b in segment {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends one request built from `data` (see the module documentation) and checks the answer.
pub fn request(data: &[u8]) {
    let [route, content, rest @ ..] = data else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let segment = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let (method, path, _) = &ROUTES[usize::from(*route) % ROUTES.len()];
    let takes_segment = path.ends_with('/');
    send(
        usize::from(*route) % ROUTES.len(),
        method,
        &format!(
            "{path}{}",
            if takes_segment {
                encode(segment)
            } else {
                String::new()
            }
        ),
        query,
        CONTENT_TYPES[usize::from(*content) % CONTENT_TYPES.len()],
        body,
    );
}

/// `metadata.*` and other query parameters on every route: the input is the query string, with
/// a valid body for the route.
pub fn query(data: &[u8]) {
    let [route, rest @ ..] = data else {
        return;
    };
    let index = usize::from(*route) % ROUTES.len();
    let (method, path, _) = &ROUTES[index];
    let body: &[u8] = match index {
        0 => br#"[{"key":"q","value":{"n":1}}]"#,
        1 => br#"{"keys":["q","r"]}"#,
        2 => br#"{"operations":[{"operation":"upsert","request":{"key":"q","value":1}}]}"#,
        6 => br#"[{"entryId":"1","event":{"n":1},"contentType":"application/json"}]"#,
        7 => br#"{"resourceId":"r","lockOwner":"o","expiryInSeconds":5}"#,
        8 => br#"{"resourceId":"r","lockOwner":"o"}"#,
        _ => br#"{"n":1}"#,
    };
    let path = if path.ends_with('/') {
        format!("{path}q")
    } else {
        path.to_string()
    };
    send(index, method, &path, rest, Some("application/json"), body);
}

fn send(
    route: usize,
    method: &Method,
    path: &str,
    query: &[u8],
    content_type: Option<&str>,
    body: &[u8],
) {
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    let Ok(req) = builder.body(Body::from(body.to_vec())) else {
        return;
    };
    let h = harness();
    let (status, answer) = h.runtime.block_on(async {
        let response = h.router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("in-memory body")
            .to_bytes();
        (status, bytes)
    });
    let bulk_publish = route == 6;
    assert!(
        !status.is_server_error() || (bulk_publish && status == StatusCode::INTERNAL_SERVER_ERROR),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    if status.is_client_error() || status.is_server_error() {
        let json: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: {status} is not Dapr JSON: {}",
                String::from_utf8_lossy(&answer)
            )
        });
        assert!(json["errorCode"].is_string(), "{method} {path}: {json}");
    }
}

/// A publish's CloudEvent, from `content-type byte, body`: the envelope is a JSON object with
/// the attributes herd fills in, or an error when a body that claims JSON is not.
pub fn cloudevent(data: &[u8]) {
    let [content, rest @ ..] = data else {
        return;
    };
    // An attribute pair can be given on the first line, `key=value`.
    let (attribute, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (std::str::from_utf8(&rest[..at]).ok(), &rest[at + 1..]),
        None => (None, rest),
    };
    let attributes: Vec<(&str, &str)> = attribute
        .and_then(|a| a.split_once('='))
        .into_iter()
        .collect();
    let content_type = CONTENT_TYPES[usize::from(*content) % CONTENT_TYPES.len()]
        .unwrap_or("application/octet-stream");
    let envelope = crate::cloudevent::Envelope {
        app: APP,
        pubsub: "bus",
        topic: "orders",
        content_type,
        body,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: None,
        attributes: &attributes,
    };
    let Ok(bytes) = crate::cloudevent::wrap(&envelope) else {
        assert!(
            content_type.contains("json"),
            "only JSON bodies can be refused"
        );
        return;
    };
    // JSON: UTF-8 text in JSON's grammar. Numbers beyond f64 (`1e400`) are JSON, and a body's
    // `data` keeps them as they came, so the envelope is read without converting them.
    std::str::from_utf8(&bytes).expect("the envelope is UTF-8");
    let event: std::collections::HashMap<String, serde::de::IgnoredAny> =
        serde_json::from_slice(&bytes).expect("the envelope is a JSON object");
    // A caller's own CloudEvent keeps its attributes (as in Dapr), `specversion` included.
    assert!(event.contains_key("specversion"));
    for key in ["id", "source", "type", "topic", "pubsubname"] {
        assert!(event.contains_key(key), "{key} missing");
    }
}
