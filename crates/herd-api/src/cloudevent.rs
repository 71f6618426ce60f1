//! CloudEvents 1.0 envelopes, as Dapr writes them: a published payload is wrapped unless it
//! already is a CloudEvent (`application/cloudevents+json`), in which case herd fills in the
//! attributes it lacks. Trace context travels in the envelope (`traceparent`, `traceid`, and
//! `tracestate` when there is one): the publish's PRODUCER span, which the consumer side
//! continues.

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// What a publish knows when it wraps a payload.
pub struct Envelope<'a> {
    /// The publishing app (the event's `source`).
    pub app: &'a str,
    /// The pub/sub component.
    pub pubsub: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The request's content type.
    pub content_type: &'a str,
    /// The request body.
    pub body: &'a [u8],
    /// The publish's `traceparent` (its PRODUCER span), written into the event as it is.
    pub traceparent: &'a str,
    /// The publish's `tracestate`, if it has one.
    pub tracestate: Option<&'a str>,
    /// Attributes the caller sets, overriding herd's (`metadata.cloudevent.type=…` on a publish,
    /// an outbox operation's metadata); `data`, `data_base64` and `specversion` cannot be set.
    pub attributes: &'a [(&'a str, &'a str)],
}

/// A random lowercase hex string of `bytes` bytes.
fn hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        out.push_str(&format!("{:02x}", fastrand::u8(..)));
    }
    out
}

/// A version 4 UUID.
pub fn uuid() -> String {
    let h = hex(16).into_bytes();
    let mut s = String::from_utf8(h).expect("hex is ascii");
    // Version 4, variant 10xx.
    s.replace_range(12..13, "4");
    let variant = ["8", "9", "a", "b"][fastrand::usize(..4)];
    s.replace_range(16..17, variant);
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The CloudEvent for `e`, serialised.
pub fn wrap(e: &Envelope<'_>) -> Result<Bytes, String> {
    // A JSON payload goes into `data` as the bytes it came in, checked but not rebuilt: parsing
    // it into a tree and writing it out again was most of a publish's CPU for 1 KB messages.
    let mut raw_data: Option<&[u8]> = None;
    let mut event: Map<String, Value> =
        if e.content_type.starts_with("application/cloudevents+json") {
            match serde_json::from_slice(e.body) {
                Ok(Value::Object(map)) => map,
                _ => return Err("the body is not a CloudEvent JSON object".into()),
            }
        } else {
            let mut map = Map::new();
            let is_json = e.content_type.contains("json");
            let data = if is_json {
                serde_json::from_slice::<serde::de::IgnoredAny>(e.body).map_err(|err| {
                    format!("the body is not JSON ({err}) but the content type says it is")
                })?;
                raw_data = Some(e.body.trim_ascii());
                Value::Null
            } else {
                match std::str::from_utf8(e.body) {
                    Ok(text) => Value::String(text.to_string()),
                    Err(_) => {
                        map.insert("data_base64".into(), json!(base64(e.body)));
                        Value::Null
                    }
                }
            };
            if !data.is_null() {
                map.insert("data".into(), data);
            }
            map.insert("datacontenttype".into(), json!(e.content_type));
            map
        };
    let mut fill = |key: &str, value: Value| {
        event.entry(key.to_string()).or_insert(value);
    };
    fill("specversion", json!("1.0"));
    fill("id", json!(uuid()));
    fill("source", json!(e.app));
    fill("type", json!("com.dapr.event.sent"));
    fill("time", json!(now_rfc3339()));
    fill("topic", json!(e.topic));
    fill("pubsubname", json!(e.pubsub));
    fill("traceparent", json!(e.traceparent));
    fill("traceid", json!(e.traceparent));
    if let Some(state) = e.tracestate {
        fill("tracestate", json!(state));
    }
    for (key, value) in e.attributes {
        if !matches!(*key, "data" | "data_base64" | "specversion") {
            event.insert((*key).to_string(), json!(value));
        }
    }
    let mut out = serde_json::to_vec(&event).map_err(|err| err.to_string())?;
    if let Some(raw) = raw_data {
        // `{...}` becomes `{...,"data":<raw>}`.
        out.pop();
        if !event.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(br#""data":"#);
        out.extend_from_slice(raw);
        out.push(b'}');
    }
    Ok(Bytes::from(out))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope<'a>(content_type: &'a str, body: &'a [u8]) -> Envelope<'a> {
        Envelope {
            app: "orders",
            pubsub: "pubsub",
            topic: "created",
            content_type,
            body,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            tracestate: Some("k=v"),
            attributes: &[],
        }
    }

    #[test]
    fn caller_attributes_override_herds_but_not_the_payload() {
        let mut e = envelope("application/json", br#"{"n":1}"#);
        e.attributes = &[
            ("type", "order.created"),
            ("subject", "o-1"),
            ("data", "hijack"),
            ("specversion", "0.3"),
        ];
        let out: Value = serde_json::from_slice(&wrap(&e).unwrap()).unwrap();
        assert_eq!(out["type"], "order.created");
        assert_eq!(out["subject"], "o-1");
        assert_eq!(out["data"], json!({"n": 1}));
        assert_eq!(out["specversion"], "1.0");
    }

    #[test]
    fn json_payloads_are_wrapped_with_dapr_attributes() {
        let out = wrap(&envelope("application/json", br#"{"n":1}"#)).unwrap();
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(e["data"], json!({"n": 1}));
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "orders");
        assert_eq!(e["topic"], "created");
        assert_eq!(e["pubsubname"], "pubsub");
        assert_eq!(e["datacontenttype"], "application/json");
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(e["traceparent"], tp);
        assert_eq!(e["traceid"], tp);
        assert_eq!(e["tracestate"], "k=v");
        assert_eq!(e["id"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn cloud_events_keep_their_attributes_and_text_stays_text() {
        let ce = br#"{"specversion":"1.0","id":"mine","source":"x","type":"order.created","data":{"a":1}}"#;
        let out = wrap(&envelope("application/cloudevents+json", ce)).unwrap();
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(e["id"], "mine");
        assert_eq!(e["type"], "order.created");
        assert_eq!(e["topic"], "created");
        let out = wrap(&envelope("text/plain", b"hello")).unwrap();
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(e["data"], "hello");
        assert!(wrap(&envelope("application/json", b"{not json")).is_err());
    }

    #[test]
    fn binary_payloads_travel_as_base64() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(&[0xff]), "/w==");
        let out = wrap(&envelope("application/octet-stream", &[0xff, 0xfe])).unwrap();
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(e["data_base64"], "//4=");
    }

    #[test]
    fn uuids_have_version_and_variant() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(["8", "9", "a", "b"].contains(&&u[19..20]), "{u}");
    }
}
