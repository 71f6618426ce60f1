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

/// A version 4 UUID: 16 random bytes, hex in the 8-4-4-4-12 layout.
pub fn uuid() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = fastrand::u128(..).to_le_bytes();
    // Version 4, variant 10xx.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The CloudEvent for `e`, serialised.
pub fn wrap(e: &Envelope<'_>) -> Result<Bytes, String> {
    if e.content_type.starts_with("application/cloudevents+json") {
        return complete(e);
    }
    // A JSON payload goes into `data` as the bytes it came in, checked but not rebuilt: parsing
    // it into a tree and writing it out again was most of a publish's CPU for 1 KB messages.
    // JSON is UTF-8; skipping over a string does not check that, so it is checked first.
    let data = if e.content_type.contains("json") {
        let not_json = |err: &dyn std::fmt::Display| {
            format!("the body is not JSON ({err}) but the content type says it is")
        };
        let text = std::str::from_utf8(e.body).map_err(|err| not_json(&err))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|err| not_json(&err))?;
        Data::Json(text.trim_ascii().as_bytes())
    } else {
        match std::str::from_utf8(e.body) {
            Ok(text) => Data::Text(text),
            Err(_) => Data::Base64(e.body),
        }
    };
    // The event is written straight out: no map of values, one buffer.
    let mut out = Object::with_capacity(e.body.len() * 4 / 3 + 512);
    match data {
        Data::Json(raw) => out.raw("data", raw),
        Data::Text(text) => out.string("data", text),
        Data::Base64(bytes) => out.string("data_base64", &base64(bytes)),
    }
    // An attribute the caller set (the last, if set twice) wins over herd's.
    let set = |key: &str| -> Option<&str> {
        e.attributes
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    };
    let mut put = |key: &str, value: &str| out.string(key, set(key).unwrap_or(value));
    put("datacontenttype", e.content_type);
    put("pubsubname", e.pubsub);
    put("source", e.app);
    put("topic", e.topic);
    put("traceid", e.traceparent);
    put("traceparent", e.traceparent);
    put("type", "com.dapr.event.sent");
    match (set("tracestate"), e.tracestate) {
        (Some(state), _) | (None, Some(state)) => out.string("tracestate", state),
        (None, None) => {}
    }
    match set("id") {
        Some(id) => out.string("id", id),
        None => out.string("id", &uuid()),
    }
    match set("time") {
        Some(time) => out.string("time", time),
        None => out.string("time", &now_rfc3339()),
    }
    out.string("specversion", "1.0");
    // The caller's other attributes, the last of a repeated one.
    for (i, (key, value)) in e.attributes.iter().enumerate() {
        let later = e.attributes[i + 1..].iter().any(|(k, _)| k == key);
        if !later && !HERDS.contains(key) {
            out.string(key, value);
        }
    }
    Ok(out.finish())
}

/// The attributes [`wrap`] writes itself (or leaves out: `data_base64` beside `data`); the
/// caller's `attributes` override all but `data`, `data_base64` and `specversion`.
const HERDS: [&str; 13] = [
    "data",
    "data_base64",
    "datacontenttype",
    "id",
    "pubsubname",
    "source",
    "specversion",
    "time",
    "topic",
    "traceid",
    "traceparent",
    "tracestate",
    "type",
];

/// A payload as it goes into the event.
enum Data<'a> {
    /// JSON, copied as it came.
    Json(&'a [u8]),
    /// UTF-8 text: a JSON string.
    Text(&'a str),
    /// Anything else: `data_base64`.
    Base64(&'a [u8]),
}

/// A JSON object written member by member.
struct Object(Vec<u8>);

impl Object {
    fn with_capacity(n: usize) -> Self {
        let mut out = Vec::with_capacity(n);
        out.push(b'{');
        Self(out)
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        serde_json::to_writer(&mut self.0, key).expect("writing to a Vec");
        self.0.push(b':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        serde_json::to_writer(&mut self.0, value).expect("writing to a Vec");
    }

    /// `value` must be one JSON value.
    fn raw(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        self.0.extend_from_slice(value);
    }

    fn finish(mut self) -> Bytes {
        self.0.push(b'}');
        Bytes::from(self.0)
    }
}

/// A CloudEvent the publisher wrote (`application/cloudevents+json`), with the attributes it
/// lacks filled in.
fn complete(e: &Envelope<'_>) -> Result<Bytes, String> {
    let mut event: Map<String, Value> = match serde_json::from_slice(e.body) {
        Ok(Value::Object(map)) => map,
        _ => return Err("the body is not a CloudEvent JSON object".into()),
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
    serde_json::to_vec(&event)
        .map(Bytes::from)
        .map_err(|err| err.to_string())
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
    fn a_json_body_with_invalid_utf8_in_a_string_is_refused() {
        // serde skips over a string without checking its bytes: the envelope would not be JSON.
        let body = b"{\"traceparent\":\"00-0\x99f7\"}";
        let err = wrap(&envelope("application/json", body)).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let ok = wrap(&envelope(
            "application/json",
            "{\"k\":\"caf\u{e9}\"}".as_bytes(),
        ))
        .unwrap();
        let event: Value = serde_json::from_slice(&ok).unwrap();
        assert_eq!(event["data"]["k"], "caf\u{e9}");
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
    fn an_attribute_set_twice_is_written_once_with_its_last_value() {
        let mut e = envelope("text/plain", b"say \"hi\"\n");
        e.tracestate = None;
        e.attributes = &[("type", "a"), ("x", "1"), ("type", "b"), ("x", "2")];
        let out = wrap(&e).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.matches(r#""type":"#).count(), 1, "{text}");
        assert_eq!(text.matches(r#""x":"#).count(), 1, "{text}");
        assert!(!text.contains("tracestate"), "{text}");
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(e["type"], "b");
        assert_eq!(e["x"], "2");
        assert_eq!(e["data"], "say \"hi\"\n");
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
        assert!(
            u.chars()
                .enumerate()
                .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
                }),
            "{u}"
        );
        assert_ne!(uuid(), u);
    }
}
