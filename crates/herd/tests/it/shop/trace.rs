//! One trace follows an order: the client's trace id goes through the gateway to orders, which
//! passes the `traceparent` on to its sidecar calls: the invocation of inventory (whose state
//! calls join it), and the transaction whose outbox publishes the event; the delivery to
//! notifications continues it, and notifications' state calls join it. The cancel, sent in the
//! same trace, goes through the outbox again to inventory's delivery and its release. The
//! spans are those herd exports over OTLP to a collector inside the test.

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::Shop;
use crate::tracing::{Collector, Received};
use crate::util::wait_for;

const TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const PLACE_SPAN: &str = "051581bf3cb55c13";
const CANCEL_SPAN: &str = "1f2e3d4c5b6a7980";

/// The spans of `spans` that are `kind`, children of `parent`, and pass `also`.
fn children<'a>(
    spans: &'a [Received],
    kind: SpanKind,
    parent: &str,
    also: impl Fn(&Received) -> bool,
) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.kind() == kind && s.parent_id() == parent && also(s))
        .collect()
}

/// The one span of `spans` that is `kind`, a child of `parent`, and passes `also`.
fn child<'a>(
    spans: &'a [Received],
    kind: SpanKind,
    parent: &str,
    what: &str,
    also: impl Fn(&Received) -> bool,
) -> &'a Received {
    let found = children(spans, kind, parent, also);
    assert_eq!(found.len(), 1, "one {what} expected: {spans:#?}");
    found[0]
}

fn is(attribute: &'static str, value: &'static str) -> impl Fn(&Received) -> bool {
    move |s| s.attribute(attribute).as_deref() == Some(value)
}

const TRANSACTION: &str = "POST /v1.0/state/{store}/transaction";

#[test]
fn one_trace_follows_an_order_through_invocation_the_outbox_and_both_deliveries() {
    let collector = Collector::start();
    let telemetry = format!(
        "\n[telemetry]\notlp_endpoint = \"http://{}\"\nservice_name = \"shop-herd\"\n",
        collector.addr
    );
    let shop = Shop::start_with(&telemetry, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);

    let place = format!("00-{TRACE}-{PLACE_SPAN}-01");
    let r = shop.order(&[("milk", 2)], &[("traceparent", &place)]);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    shop.notification(&id);
    let cancel = format!("00-{TRACE}-{CANCEL_SPAN}-01");
    let path = format!("/orders/{id}/cancel");
    assert_eq!(
        shop.call("POST", &path, &[("traceparent", &cancel)], "")
            .status,
        200
    );
    wait_for("the stock released", Duration::from_secs(20), || {
        (shop.available("milk") == 100).then_some(())
    });

    let release_done = |spans: &[Received]| {
        spans.iter().any(|s| {
            s.kind() == SpanKind::Consumer
                && s.attribute("messaging.consumer.group.name").as_deref() == Some("inventory")
                && spans
                    .iter()
                    .any(|c| c.parent_id() == s.span_id() && c.span.name == TRANSACTION)
        })
    };
    let spans = wait_for("the exported spans", Duration::from_secs(20), || {
        let spans: Vec<Received> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id() == TRACE)
            .collect();
        let notified = spans.iter().any(|s| {
            s.kind() == SpanKind::Server
                && s.attribute("herd.app_id").as_deref() == Some("notifications")
        });
        (notified && release_done(&spans)).then_some(spans)
    });
    assert!(spans.iter().all(|s| s.service == "shop-herd"));

    // Placing: gateway → orders → invocation of inventory (and inventory's state calls) and
    // the orders transaction → the outbox's PRODUCER span → the delivery to notifications →
    // notifications' transaction.
    let gateway = child(&spans, SpanKind::Server, PLACE_SPAN, "gateway span", |s| {
        s.attribute("url.path").as_deref() == Some("/orders")
    });
    let invoke = child(
        &spans,
        SpanKind::Server,
        &gateway.span_id(),
        "invocation",
        is("url.path", "/v1.0/invoke/inventory/method/reservations"),
    );
    assert_eq!(invoke.attribute("herd.app_id").as_deref(), Some("orders"));
    assert_eq!(
        invoke.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    child(
        &spans,
        SpanKind::Server,
        &invoke.span_id(),
        "inventory's reservation transaction",
        |s| {
            s.span.name == TRANSACTION && s.attribute("herd.app_id").as_deref() == Some("inventory")
        },
    );
    let store = child(
        &spans,
        SpanKind::Server,
        &gateway.span_id(),
        "the order's transaction",
        |s| s.span.name == TRANSACTION,
    );
    assert_eq!(store.attribute("herd.app_id").as_deref(), Some("orders"));
    assert_eq!(
        store.attribute("url.path").as_deref(),
        Some("/v1.0/state/orderstore/transaction")
    );
    let publish = child(
        &spans,
        SpanKind::Producer,
        &store.span_id(),
        "outbox publish",
        |_| true,
    );
    assert_eq!(publish.span.name, "publish orders");
    let delivered = child(
        &spans,
        SpanKind::Consumer,
        &publish.span_id(),
        "delivery to notifications",
        is("messaging.consumer.group.name", "notifications"),
    );
    assert_eq!(delivered.span.name, "process orders");
    child(
        &spans,
        SpanKind::Server,
        &delivered.span_id(),
        "notifications' transaction",
        |s| {
            s.span.name == TRANSACTION
                && s.attribute("herd.app_id").as_deref() == Some("notifications")
        },
    );

    // Cancelling: gateway → orders' transaction → the outbox → the delivery to inventory →
    // inventory's release transaction.
    let gateway = child(
        &spans,
        SpanKind::Server,
        CANCEL_SPAN,
        "cancel's gateway span",
        |_| true,
    );
    assert_eq!(
        gateway.attribute("url.path").as_deref(),
        Some(path.as_str())
    );
    let store = child(
        &spans,
        SpanKind::Server,
        &gateway.span_id(),
        "the cancel's transaction",
        |s| s.span.name == TRANSACTION,
    );
    let publish = child(
        &spans,
        SpanKind::Producer,
        &store.span_id(),
        "cancel publish",
        |_| true,
    );
    let delivered = child(
        &spans,
        SpanKind::Consumer,
        &publish.span_id(),
        "delivery to inventory",
        is("messaging.consumer.group.name", "inventory"),
    );
    child(
        &spans,
        SpanKind::Server,
        &delivered.span_id(),
        "inventory's release transaction",
        |s| {
            s.span.name == TRANSACTION && s.attribute("herd.app_id").as_deref() == Some("inventory")
        },
    );
}
