//! Distributed tracing end to end: herd exports its spans over OTLP/HTTP to a small collector
//! inside the test, and one trace follows a request from the gateway through an app, its
//! invocation of an app, that app's publish through the sidecar API and the delivery back to
//! the app. Also: herd's log lines are JSON with the trace id when its stderr is not a
//! terminal.
//!
//! The app is `tests/node/traced.js` (it invokes itself, so one service plays both parts).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::Value;

use crate::state::call_at;
use crate::util::{Herd, free_port, node_available, wait_for};

fn traced_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/traced.js")
}

/// A span as the collector received it, with the service that sent it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// The `service.name` of the exporting process.
    pub(crate) service: String,
    /// The span.
    pub(crate) span: Span,
}

impl Received {
    pub(crate) fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub(crate) fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub(crate) fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    pub(crate) fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }
    pub(crate) fn attribute(&self, key: &str) -> Option<String> {
        let v = self.span.attributes.iter().find(|a| a.key == key)?;
        match v.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP collector: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`,
/// answered 200, its spans kept.
pub(crate) struct Collector {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    /// A collector on a free loopback port.
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let kept = spans.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let kept = kept.clone();
                        async move { Ok::<_, hyper::Error>(receive(req, &kept).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            spans,
            _runtime: runtime,
        }
    }

    /// The spans received so far.
    pub(crate) fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(
    req: hyper::Request<hyper::body::Incoming>,
    kept: &Mutex<Vec<Received>>,
) -> hyper::Response<Full<Bytes>> {
    let status = if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" {
        404
    } else {
        match req.into_body().collect().await {
            Ok(body) => match ExportTraceServiceRequest::decode(body.to_bytes()) {
                Ok(export) => {
                    let mut kept = kept.lock().unwrap();
                    for rs in export.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                                AnyValue::StringValue(s) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                kept.push(Received {
                                    service: service.clone(),
                                    span,
                                });
                            }
                        }
                    }
                    200
                }
                Err(_) => 400,
            },
            Err(_) => 400,
        }
    };
    let mut r = hyper::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r
}

/// A herd with a gateway in front of the traced app, the sidecar API on `api` and spans going
/// to `collector` (exported every 100 ms).
fn start_herd(collector: &Collector, topic: &str, events: &Path) -> (Herd, SocketAddr, SocketAddr) {
    let (gateway, api) = (free_port(), free_port());
    let config = format!(
        r#"
[telemetry]
otlp_endpoint = "http://{collector}"
service_name = "herd-under-test"

[api]
listen = "127.0.0.1:{api}"

[[service]]
name = "shop"
command = ["node", "{app}"]
port = "auto"
env = {{ TOPIC = "{topic}", EVENTS_FILE = "{events}" }}

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{gateway}"

[[route]]
service = "shop"
"#,
        collector = collector.addr,
        app = traced_js().display(),
        events = events.display(),
    );
    let mut herd = Herd::prepare(&config);
    herd.env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    herd.env
        .push(("HERD_LOG".into(), "info,herd_api=debug".into()));
    herd.spawn();
    herd.wait_all_ready();
    let api: SocketAddr = ([127, 0, 0, 1], api).into();
    wait_for("the subscription", Duration::from_secs(30), || {
        let meta = call_at(api, "GET", "/v1.0/metadata", &[], "").json();
        meta["subscriptions"]
            .as_array()?
            .iter()
            .any(|s| s["topic"] == topic)
            .then_some(())
    });
    (herd, ([127, 0, 0, 1], gateway).into(), api)
}

/// The deliveries the app recorded.
fn deliveries(events: &Path) -> Vec<Value> {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn one_trace_follows_a_request_from_the_gateway_through_invocation_publish_and_delivery() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let topic = format!("orders-{}", crate::state::run_id());
    let (herd, gateway, _api) = start_herd(&collector, &topic, &events);

    // A client with a trace of its own: every herd span joins it.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = call_at(
        gateway,
        "POST",
        "/order",
        &[
            ("traceparent", &format!("00-{trace}-{client_span}-01")),
            ("content-type", "application/json"),
        ],
        r#"{"n":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let delivered = wait_for("the delivery", Duration::from_secs(20), || {
        deliveries(&events).into_iter().next()
    });

    // gateway SERVER → API SERVER (invoke) → API SERVER (publish) → PRODUCER → CONSUMER → the
    // app's delivery.
    let spans = wait_for("the exported spans", Duration::from_secs(20), || {
        let spans: Vec<Received> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace)
            .collect();
        (spans.len() >= 5 && spans.iter().any(|s| s.kind() == SpanKind::Consumer)).then_some(spans)
    });
    let by_id: HashMap<String, &Received> = spans.iter().map(|s| (s.span_id(), s)).collect();
    let one = |kind: SpanKind, what: &str| -> &Received {
        let found: Vec<&Received> = spans.iter().filter(|s| s.kind() == kind).collect();
        assert_eq!(found.len(), 1, "one {what} span expected: {spans:#?}");
        found[0]
    };
    let servers: Vec<&Received> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Server)
        .collect();
    assert_eq!(servers.len(), 3, "{spans:#?}");
    let gateway_span = servers
        .iter()
        .find(|s| s.parent_id() == client_span)
        .expect("the gateway's span is a child of the client's");
    assert_eq!(gateway_span.span.name, "POST");
    assert_eq!(
        gateway_span.attribute("url.path").as_deref(),
        Some("/order")
    );
    assert_eq!(
        gateway_span
            .attribute("http.response.status_code")
            .as_deref(),
        Some("200")
    );
    assert_eq!(gateway_span.service, "herd-under-test");

    let invoke_span = servers
        .iter()
        .find(|s| s.parent_id() == gateway_span.span_id())
        .expect("the invocation's span is a child of the gateway's");
    assert_eq!(invoke_span.span.name, "POST /v1.0/invoke/{*rest}");
    assert_eq!(
        invoke_span.attribute("url.path").as_deref(),
        Some("/v1.0/invoke/shop/method/publish")
    );
    assert_eq!(
        invoke_span
            .attribute("http.response.status_code")
            .as_deref(),
        Some("200")
    );

    let api_span = servers
        .iter()
        .find(|s| s.parent_id() == invoke_span.span_id())
        .expect("the publish request's span is a child of the invocation's");
    assert_eq!(api_span.span.name, "POST /v1.0/publish/{pubsub}/{topic}");
    assert_eq!(api_span.attribute("herd.app_id").as_deref(), Some("shop"));
    assert_eq!(
        api_span.attribute("http.response.status_code").as_deref(),
        Some("204")
    );

    let producer = one(SpanKind::Producer, "producer");
    assert_eq!(producer.parent_id(), api_span.span_id());
    assert_eq!(producer.span.name, format!("publish {topic}"));
    assert_eq!(
        producer.attribute("messaging.destination.name").as_deref(),
        Some(topic.as_str())
    );

    let consumer = one(SpanKind::Consumer, "consumer");
    assert_eq!(consumer.parent_id(), producer.span_id());
    assert_eq!(consumer.span.name, format!("process {topic}"));
    assert_eq!(
        consumer
            .attribute("messaging.consumer.group.name")
            .as_deref(),
        Some("shop")
    );
    assert!(by_id.contains_key(&consumer.parent_id()));

    // The app's delivery names the consumer span as its parent.
    assert_eq!(
        delivered["traceparent"],
        format!("00-{trace}-{}-01", consumer.span_id())
    );

    // The access line is JSON with the trace id; lines written in the API's handlers and in
    // delivery carry it as `trace_id`.
    let lines = wait_for("the log lines", Duration::from_secs(5), || {
        let lines = json_lines(&herd);
        let access = lines
            .iter()
            .any(|l| l["target"] == "herd::access" && l["traceId"] == trace && l["status"] == 200);
        let api = lines.iter().any(|l| {
            l["trace_id"] == trace && l["message"] == "POST /v1.0/publish/{pubsub}/{topic}"
        });
        (access && api).then_some(lines)
    });
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string())
    );
}

/// Every line of herd's stderr, each of which must be a JSON object.
fn json_lines(herd: &Herd) -> Vec<Value> {
    herd.stderr()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
        })
        .collect()
}

#[test]
fn log_lines_are_json_with_the_trace_id_when_stderr_is_not_a_terminal() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let topic = format!("logs-{}", crate::state::run_id());
    let (herd, _gateway, api) = start_herd(&collector, &topic, &events);

    // The app answers 404 at this route, so the delivery is dropped with a warning, written
    // inside the delivery's span.
    let dropped = format!("{topic}-dropped");
    wait_for("the second subscription", Duration::from_secs(30), || {
        let meta = call_at(api, "GET", "/v1.0/metadata", &[], "").json();
        meta["subscriptions"]
            .as_array()?
            .iter()
            .any(|s| s["topic"] == dropped.as_str())
            .then_some(())
    });
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = call_at(
        api,
        "POST",
        &format!("/v1.0/publish/pubsub/{dropped}"),
        &[("traceparent", &format!("00-{trace}-b7ad6b7169203331-01"))],
        r#"{"n":2}"#,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let warning = wait_for("the drop warning", Duration::from_secs(20), || {
        json_lines(&herd).into_iter().find(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&dropped) && m.contains("dropped"))
        })
    });
    assert_eq!(warning["trace_id"], trace, "{warning}");
    assert!(warning["timestamp"].as_str().unwrap().ends_with('Z'));
    // Lines outside any request have no trace id.
    let lines = json_lines(&herd);
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l.get("trace_id").is_none()),
        "{lines:#?}"
    );
}
